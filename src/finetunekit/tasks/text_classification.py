"""Text classification: a pre-trained encoder with a new classification head.

The fair 'before' number for a head that does not exist yet is a linear probe: logistic
regression on the frozen model's mean-pooled features. The saved model carries the label names,
so `transformers.pipeline("text-classification", model=...)` returns them directly.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..data.readers import WHERE, RowError, require_text
from .classification import ClassificationTask, label_text  # noqa: F401 (re-exported)
from .padding import pad_ids


class TextClassification(ClassificationTask):
    name = "text-classification"
    peft_task_type = "SEQ_CLS"
    fields = ("text", "label")
    input_field = "text"

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        text = require_text(row, "text", self._column("text"))
        if "label" not in row:
            raise RowError(self._column("label"), "missing (check data.columns)")
        return {"text": text, "label": label_text(row["label"], self._column("label"))}

    def row_key(self, row: dict[str, Any]) -> Hashable:
        return row["text"].strip()

    def row_length(self, row: dict[str, Any]) -> int:
        return len(row["text"].split())

    # --- model ----------------------------------------------------------------------------
    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=self.cfg.trust_remote_code
        )
        model = self._load_with_new_head(AutoModelForSequenceClassification, model_path,
                                         train_rows)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return self._load_tuned_with_head(AutoModelForSequenceClassification, model_dir)

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        index = {name: i for i, name in enumerate(self.labels)}
        enc = self.tokenizer(
            [r["text"] for r in rows], truncation=True, max_length=self.cfg.train.max_length
        )
        return [
            {"input_ids": ids, "label": index.get(r["label"], -1), "where": r[WHERE]}
            for ids, r in zip(enc["input_ids"], rows, strict=True)
        ]

    def example_length(self, example: dict[str, Any]) -> int:
        return len(example["input_ids"])

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids, mask = pad_ids([e["input_ids"] for e in examples], self.tokenizer.pad_token_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([e["label"] for e in examples]),
            "num_items": len(examples),
            "num_tokens": int(mask.sum()),
            "_where": [e["where"] for e in examples],
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return self.label_loss(logits, batch["labels"])

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, model: torch.nn.Module, examples: list[dict[str, Any]]) -> torch.Tensor:
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        out = torch.empty(len(examples), len(self.labels))
        size = self.cfg.eval.batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batch = self.collate([examples[i] for i in chunk])
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
            out[chunk] = logits.float().cpu()
        return out

    @torch.no_grad()
    def features(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> np.ndarray:
        """Mean-pooled last hidden states of the frozen backbone."""
        backbone = model.base_model
        backbone.eval()
        device = next(model.parameters()).device
        examples = self.encode(rows, training=False)
        feats = []
        size = self.cfg.eval.batch_size
        for start in range(0, len(examples), size):
            batch = self.collate(examples[start : start + size])
            mask = batch["attention_mask"].to(device)
            hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask)
            hidden = hidden.last_hidden_state.float()
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            feats.append(pooled.cpu().numpy())
        return np.concatenate(feats)

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        rows = [{"text": t, "label": self.labels[0], WHERE: f"input {i + 1}"}
                for i, t in enumerate(inputs)]
        return self._ranked(inputs, self._logits(model, self.encode(rows, training=False)))
