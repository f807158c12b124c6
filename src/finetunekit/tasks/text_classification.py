"""Text classification: a pre-trained encoder with a new classification head.

The fair 'before' number for a head that does not exist yet is a linear probe: logistic
regression on the frozen model's mean-pooled features. The saved model carries the label names,
so `transformers.pipeline("text-classification", model=...)` returns them directly.

A row may also carry a second text, `text_pair` (sentence-pair classification: entailment,
paraphrase, does this answer fit this question): the two are encoded together, as
`tokenizer(text, text_pair)` and the pipeline's `{"text": ..., "text_pair": ...}` do, so the
encoder attends across them (a cross-encoder). The training split's first row decides whether a
run has pairs; every other row must agree, and the saved config says so (`PAIR_FLAG`), so `eval`
and `predict` hold a tuned model to the inputs it learned.

A row's label may also be a list (or text split at `data.label_separator`): multi-label
classification (ClassificationTask). The first training row decides here too: once it has a
list, a row with one label is a set of one; before, a list is an error.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..data.readers import WHERE, RowError, require_text
from ..errors import UserError
from .classification import ClassificationTask, label_set, label_text  # noqa: F401
from .padding import pad_ids

PAIR_FLAG = "finetunekit_text_pair"  # in a tuned model's config: it reads (text, text_pair)
PAIR_SEPARATOR = "\t"  # between the two texts of one `predict` input
PAIR_SHOWN = " || "  # between them where a prediction's input is shown


class TextClassification(ClassificationTask):
    name = "text-classification"
    peft_task_type = "SEQ_CLS"
    fields = ("text", "text_pair", "label")
    input_field = "text"
    pairs: bool | None = None  # sentence pairs; None until the first row (or the tuned model) says
    multi_label: bool | None = None  # label sets; decided the same way

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        text = require_text(row, "text", self._column("text"))
        column = self._column("label")
        if "label" not in row:
            raise RowError(column, "missing (check data.columns)")
        separator = self.cfg.data.label_separator
        listed = isinstance(row["label"], list | tuple) or separator is not None
        multi = listed if self.multi_label is None else self.multi_label
        if listed and not multi:
            raise RowError(column, "expected one label, got a list (multi-label data needs a "
                                   "list in the first training row too)")
        label = label_set(row["label"], column, separator) if multi else label_text(row["label"],
                                                                                   column)
        checked = {"text": text, "label": label}
        if "text_pair" in row:
            checked["text_pair"] = require_text(row, "text_pair", self._column("text_pair"))
        pair = "text_pair" in checked
        if self.multi_label is None:
            self.multi_label = multi
        if self.pairs is None:
            self.pairs = pair
        elif pair != self.pairs:
            raise RowError(self._column("text_pair"), (
                "missing: this run classifies sentence pairs (text and text_pair, as its "
                "training data's first row has), so every row needs both" if self.pairs else
                "not expected: this run classifies single texts (its training data's first "
                "row has no text_pair), so no row may have one"))
        return checked

    def row_key(self, row: dict[str, Any]) -> Hashable:
        if "text_pair" in row:
            return row["text"].strip(), row["text_pair"].strip()
        return row["text"].strip()

    def row_length(self, row: dict[str, Any]) -> int:
        return len(row["text"].split()) + len(row.get("text_pair", "").split())

    def shown_input(self, row: dict[str, Any]) -> str:
        if "text_pair" in row:
            return f"{row['text']}{PAIR_SHOWN}{row['text_pair']}"
        return row["text"]

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
        if self.pairs:
            setattr(model.config, PAIR_FLAG, True)
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = self._load_tuned_with_head(AutoModelForSequenceClassification, model_dir)
        self.pairs = bool(getattr(model.config, PAIR_FLAG, False))
        return model

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        seconds = [r["text_pair"] for r in rows] if self.pairs else None
        enc = self.tokenizer(  # pairs: truncated longest first, as the pipeline does
            [r["text"] for r in rows], seconds, truncation=True,
            max_length=self.cfg.train.max_length,
        )
        examples = [
            {"input_ids": ids, "label": self.label_target(r), "where": r[WHERE]}
            for ids, r in zip(enc["input_ids"], rows, strict=True)
        ]
        if self.pairs and "token_type_ids" in enc:  # BERT-like models: which text a token is in
            for example, types in zip(examples, enc["token_type_ids"], strict=True):
                example["token_type_ids"] = types
        return examples

    def example_length(self, example: dict[str, Any]) -> int:
        return len(example["input_ids"])

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids, mask = pad_ids([e["input_ids"] for e in examples], self.tokenizer.pad_token_id)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([e["label"] for e in examples]),
            "num_items": len(examples),
            "num_tokens": int(mask.sum()),
            "_where": [e["where"] for e in examples],
        }
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = pad_ids([e["token_type_ids"] for e in examples], 0)[0]
        return batch

    @staticmethod
    def model_inputs(batch: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
        """What the model reads from a batch (token types only for sentence pairs), on `device`."""
        names = ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k] if device is None else batch[k].to(device)
                for k in names if k in batch}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(**self.model_inputs(batch)).logits
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
            out[chunk] = model(**self.model_inputs(batch, device)).logits.float().cpu()
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
            inputs = self.model_inputs(self.collate(examples[start : start + size]), device)
            mask = inputs["attention_mask"]
            hidden = backbone(**inputs).last_hidden_state.float()
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            feats.append(pooled.cpu().numpy())
        return np.concatenate(feats)

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """A pair model's input is its two texts with a tab between them (a line of a TSV file
        given to `--inputs-file`), or a (text, text_pair) tuple from Python."""
        placeholder = () if self.multi_label else self.labels[0]  # not scored
        rows = [{**self._predict_texts(item, i), "label": placeholder, WHERE: f"input {i + 1}"}
                for i, item in enumerate(inputs)]
        return self._ranked(inputs, self._logits(model, self.encode(rows, training=False)))

    def _predict_texts(self, item: str | tuple[str, str], index: int) -> dict[str, str]:
        if not self.pairs:
            if not isinstance(item, str):
                raise UserError(f"input {index + 1}: this model classifies single texts; "
                                "expected one text, not a pair")
            return {"text": item}
        parts = item.split(PAIR_SEPARATOR, 1) if isinstance(item, str) else list(item)
        if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
            raise UserError(f"input {index + 1}: this model classifies sentence pairs; expected "
                            "two non-empty texts with a tab between them (text<TAB>text_pair)")
        return {"text": parts[0], "text_pair": parts[1]}
