"""What text, image and audio classification share: labels, checks, metrics, linear probe.

Each of them puts a new head on a pre-trained backbone, so the pieces around that head are the
same: the label set comes from the training split, held-out rows with unseen labels are refused,
predictions and metrics come from logits, and the fair 'before' number is a linear probe on the
frozen backbone's features. A subclass only says how to get logits and features for its inputs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data.readers import WHERE, RowError
from ..errors import UserError
from ..evaluate.classification import classification_metrics
from ..models import NO_HUB_KERNELS
from .base import EvalResult, Task

PROBE_CS = np.logspace(-4, 2, 7)  # the linear probe's inverse regularization strengths tried
PROBE_FOLDS = 5


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


class ClassificationTask(Task):
    default_metric = "accuracy"
    metric_mode = "max"
    input_field: ClassVar[str]  # the row field shown as the prediction's input
    probe_c: ClassVar[float] = 1.0  # the probe's regularization where it cannot be cross-validated

    labels: list[str]
    class_weights: torch.Tensor | None = None  # per label, in `labels` order (train.class_weights)

    def row_label(self, row: dict[str, Any]) -> Hashable:
        return row["label"]

    def shown_input(self, row: dict[str, Any]) -> str:
        """A row's input as a prediction shows it."""
        return row[self.input_field]

    def _load_with_new_head(self, auto_class: Any, model_path: str,
                            train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        """The pre-trained model with a fresh head over the training split's labels, whose names
        go into the saved config (so a plain `pipeline` reports them)."""
        self.labels = sorted({r["label"] for r in train_rows})
        if self.cfg.train.class_weights == "balanced":
            counts = Counter(r["label"] for r in train_rows)
            self.class_weights = torch.tensor(
                [len(train_rows) / (len(self.labels) * counts[name]) for name in self.labels])
        return auto_class.from_pretrained(
            model_path,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
            ignore_mismatched_sizes=True,
            **self.model_kwargs,
        )

    def _load_tuned_with_head(self, auto_class: Any, model_dir: Path) -> torch.nn.Module:
        """A tuned model; its label names come back from its config."""
        model = auto_class.from_pretrained(model_dir, **NO_HUB_KERNELS)
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return model

    def check_eval_rows(self, train: list[dict], rows: list[dict], split: str) -> list[dict]:
        """A held-out label the model never trained on cannot be predicted: refuse (or skip) it."""
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

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss, summed over the batch (the loop divides by the window's examples):
        cross-entropy in fp32, with `train.label_smoothing` and `train.class_weights`. Balanced
        weights average 1 over the training split, so the loss keeps its scale."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum",
                               label_smoothing=self.cfg.train.label_smoothing)

    @abstractmethod
    def _logits(self, model: torch.nn.Module, examples: list[Any]) -> torch.Tensor:
        """Logits `[len(examples), len(labels)]` on CPU, in the order given."""

    @abstractmethod
    def features(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> np.ndarray:
        """What the classification head sees, from the frozen pre-trained model."""

    def _result(self, logits: torch.Tensor, rows: list[dict[str, Any]]) -> EvalResult:
        index = {name: i for i, name in enumerate(self.labels)}
        y_true = [index[r["label"]] for r in rows]
        probs = logits.softmax(-1)
        y_pred = probs.argmax(-1).tolist()
        metrics, details = classification_metrics(y_true, y_pred, self.labels)
        metrics["loss"] = float(F.cross_entropy(logits, torch.tensor(y_true)).item())
        predictions = [
            {"where": r[WHERE], "input": self.shown_input(r), "target": r["label"],
             "prediction": self.labels[p], "score": round(float(probs[i, p]), 4)}
            for i, (r, p) in enumerate(zip(rows, y_pred, strict=True))
        ]
        return EvalResult(metrics, details, predictions)

    def _ranked(self, inputs: list[str], logits: torch.Tensor) -> list[dict[str, Any]]:
        """`predict`'s answer: the best label and score of each input, and its top three."""
        results = []
        for item, p in zip(inputs, logits.softmax(-1), strict=True):
            top = p.topk(min(3, len(self.labels)))
            results.append({
                "input": item, "label": self.labels[int(top.indices[0])],
                "score": round(float(top.values[0]), 4),
                "top": [{"label": self.labels[int(j)], "score": round(float(v), 4)}
                        for v, j in zip(top.values, top.indices, strict=True)],
            })
        return results

    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        return self._result(self._logits(model, self.encode(rows, training=False)), rows)

    def baseline(
        self, model: torch.nn.Module, train: list[dict[str, Any]], test: list[dict[str, Any]]
    ) -> EvalResult:
        """Linear probe: logistic regression on frozen features (the new head is untrained)."""
        index = {name: i for i, name in enumerate(self.labels)}
        probe, how = self.fit_probe(self.features(model, train), [index[r["label"]] for r in train])
        scores = torch.from_numpy(np.asarray(probe.decision_function(self.features(model, test)),
                                             dtype=np.float64))
        if scores.ndim == 1:  # two classes: one logit difference
            scores = torch.stack([torch.zeros_like(scores), scores], dim=1)
        logits = torch.full((len(test), len(self.labels)), -1e9)  # classes the probe never saw
        # log-softmax of the scores, not log(predict_proba): a confident probe's probabilities
        # round to 0, whose log is -inf
        logits[:, torch.as_tensor(probe.classes_)] = scores.log_softmax(-1).float()
        result = self._result(logits, test)
        result.details["baseline"] = f"linear probe on frozen pooled features ({how})"
        return result

    def fit_probe(self, features: np.ndarray, labels: list[int]) -> tuple[Any, str]:
        """Logistic regression on standardized features, and how its regularization was chosen.

        The strength is chosen by stratified cross-validation on the training rows (log loss):
        no one value suits every feature set, and a badly regularized probe would make the
        'before' number unfairly low (on the food reviews, C=1 read 0.749 accuracy where the
        chosen C=0.01 reads 0.777). With fewer than two rows of some class there is nothing to
        cross-validate, and the task's `probe_c` is used."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=self.probe_c))
        folds = min(PROBE_FOLDS, *Counter(labels).values())
        if folds < 2 or len(set(labels)) < 2:
            return probe.fit(features, labels), f"C={self.probe_c:g}"
        search = GridSearchCV(
            probe, {"logisticregression__C": PROBE_CS}, scoring="neg_log_loss",
            cv=StratifiedKFold(folds, shuffle=True, random_state=self.cfg.train.seed),
        ).fit(features, labels)
        chosen = search.best_params_["logisticregression__C"]
        return search.best_estimator_, f"C={chosen:g}, chosen by {folds}-fold cross-validation"
