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
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..data.readers import WHERE, RowError, require_text
from ..errors import UserError
from ..evaluate.classification import classification_metrics
from .base import EvalResult, Task


def label_text(value: Any, column: str) -> str:
    """Labels may be strings, integers or booleans in the file; we name them as text."""
    if isinstance(value, bool) or isinstance(value, int | str):
        text = str(value).strip()
        if text:
            return text
        raise RowError(column, "empty label")
    if value is None:
        raise RowError(column, "missing label")
    raise RowError(column, f"expected a label (text or integer), got {type(value).__name__}")


def pad_ids(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one tensor plus its attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if side == "right":
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        else:
            ids[i, width - len(seq) :] = torch.tensor(seq)
            mask[i, width - len(seq) :] = 1
    return ids, mask


class TextClassification(Task):
    name = "text-classification"
    default_metric = "accuracy"
    metric_mode = "max"
    peft_task_type = "SEQ_CLS"
    fields = ("text", "label")

    labels: list[str]

    def _column(self, field: str) -> str:
        return self.cfg.data.columns.get(field, field)

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        text = require_text(row, "text", self._column("text"))
        if "label" not in row:
            raise RowError(self._column("label"), "missing (check data.columns)")
        return {"text": text, "label": label_text(row["label"], self._column("label"))}

    def check_eval_rows(self, train: list[dict], rows: list[dict], split: str) -> list[dict]:
        known = {r["label"] for r in train}
        kept = []
        for row in rows:
            if row["label"] in known:
                kept.append(row)
                continue
            message = (f"{row[WHERE]}: field '{self._column('label')}': label {row['label']!r} "
                       f"does not occur in the training split (labels: {', '.join(sorted(known))})")
            if not self.cfg.data.skip_bad_rows:
                raise UserError(message)
        return kept

    def row_key(self, row: dict[str, Any]) -> Hashable:
        return row["text"].strip()

    def row_length(self, row: dict[str, Any]) -> int:
        return len(row["text"].split())

    def row_label(self, row: dict[str, Any]) -> Hashable:
        return row["label"]

    # --- model ----------------------------------------------------------------------------
    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        self.labels = sorted({r["label"] for r in train_rows})
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=self.cfg.trust_remote_code
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
            ignore_mismatched_sizes=True,
            trust_remote_code=self.cfg.trust_remote_code,
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return model

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
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")

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

    def _result(self, logits: torch.Tensor, rows: list[dict[str, Any]]) -> EvalResult:
        index = {name: i for i, name in enumerate(self.labels)}
        y_true = [index[r["label"]] for r in rows]
        probs = logits.softmax(-1)
        y_pred = probs.argmax(-1).tolist()
        metrics, details = classification_metrics(y_true, y_pred, self.labels)
        metrics["loss"] = float(F.cross_entropy(logits, torch.tensor(y_true)).item())
        predictions = [
            {"where": r[WHERE], "input": r["text"], "target": r["label"],
             "prediction": self.labels[p], "score": round(float(probs[i, p]), 4)}
            for i, (r, p) in enumerate(zip(rows, y_pred, strict=True))
        ]
        return EvalResult(metrics, details, predictions)

    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        return self._result(self._logits(model, self.encode(rows, training=False)), rows)

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

    def baseline(
        self, model: torch.nn.Module, train: list[dict[str, Any]], test: list[dict[str, Any]]
    ) -> EvalResult:
        """Linear probe: logistic regression on frozen features (the new head is untrained)."""
        from sklearn.linear_model import LogisticRegression

        index = {name: i for i, name in enumerate(self.labels)}
        probe = LogisticRegression(max_iter=2000)
        probe.fit(self.features(model, train), [index[r["label"]] for r in train])
        logits = torch.from_numpy(probe.predict_log_proba(self.features(model, test))).float()
        result = self._result(logits, test)
        result.details["baseline"] = "linear probe on frozen mean-pooled features"
        return result

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        rows = [{"text": t, "label": self.labels[0], WHERE: f"input {i + 1}"}
                for i, t in enumerate(inputs)]
        probs = self._logits(model, self.encode(rows, training=False)).softmax(-1)
        return [
            {"input": t, "label": self.labels[int(p.argmax())], "score": round(float(p.max()), 4)}
            for t, p in zip(inputs, probs, strict=True)
        ]
