"""What text, image and audio classification share: labels, checks, metrics, linear probe.

Each of them puts a new head on a pre-trained backbone, so the pieces around that head are the
same: the label set comes from the training split, held-out rows with unseen labels are refused,
predictions and metrics come from logits, and the fair 'before' number is a linear probe on the
frozen backbone's features. A subclass only says how to get logits and features for its inputs.

Multi-label rows (`multi_label`: a row's label is a set, possibly empty, as text classification
reads them) train one sigmoid per label (transformers' `multi_label_classification`, so a plain
pipeline scores them the same way), predict every label at or above 0.5, and are scored by
micro-F1; the probe is then one logistic regression per label.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data.readers import WHERE, RowError
from ..errors import UserError
from ..evaluate.classification import best_threshold, classification_metrics, multilabel_metrics
from ..evaluate.significance import RowScores
from ..models import NO_HUB_KERNELS
from .base import EvalResult, Task

PROBE_CS = np.logspace(-4, 2, 7)  # the linear probe's inverse regularization strengths tried
PROBE_FOLDS = 5
MULTI_LABEL = "multi_label_classification"  # transformers' problem_type for a set of labels
THRESHOLD = 0.5  # multi-label: a label is predicted when its probability reaches this
THRESHOLD_KEY = "finetunekit_threshold"  # in a tuned model's config: its own threshold, if tuned
NO_LABEL = "(none)"  # multi-label: how a row with an empty label set is counted in the report


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


def label_set(value: Any, column: str, separator: str | None) -> tuple[str, ...]:
    """A multi-label row's labels, sorted and once each: a list (JSON array, Parquet list), text
    split at `data.label_separator` (an empty cell: no label), or one label alone."""
    if isinstance(value, str) and separator is not None:
        items: Any = [item for item in value.split(separator) if item.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        items = [value]
    return tuple(sorted({label_text(item, column) for item in items}))


class ClassificationTask(Task):
    default_metric = "accuracy"
    metric_mode = "max"
    input_field: ClassVar[str]  # the row field shown as the prediction's input
    probe_c: ClassVar[float] = 1.0  # the probe's regularization where it cannot be cross-validated

    labels: list[str]
    class_weights: torch.Tensor | None = None  # per label, in `labels` order (train.class_weights)
    multi_label: bool | None = False  # a row's label is a set (text classification may say so)
    threshold: float = THRESHOLD  # multi-label: eval.threshold, or the one tuned on validation
    _index_of: dict[str, int] | None = None  # label -> its position in `labels`

    def row_label(self, row: dict[str, Any]) -> Hashable:
        """The label to count (a multi-label row's labels, each counted) and stratify by."""
        if self.multi_label:
            return tuple(row["label"]) or (NO_LABEL,)
        return row["label"]

    def stratum(self, rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Hashable] | None:
        """Multi-label rows are stratified by their rarest label: their label sets are mostly
        too rare to split (a set of one row always stays in train), while every label with
        rows enough reaches each split."""
        if not self.multi_label:
            return super().stratum(rows)
        counts = Counter(name for r in rows for name in r["label"])
        return lambda row: min(row["label"], key=lambda n: (counts[n], n), default=NO_LABEL)

    def row_labels(self, row: dict[str, Any]) -> tuple[str, ...]:
        """A row's labels as a set, whichever kind of row it is."""
        return tuple(row["label"]) if self.multi_label else (row["label"],)

    def label_rows(self) -> list[dict[str, Any]]:
        """Rows that stand for the labels the model knows (a tuned model's, for checking other
        files against it as against its training split)."""
        if self.multi_label:
            return [{"label": tuple(self.labels)}]
        return [{"label": name} for name in self.labels]

    def label_target(self, row: dict[str, Any]) -> int | list[float]:
        """What the loss compares the logits with: the label's index (-1 for a label the model
        lacks: predict's placeholder rows), or a multi-hot vector over `labels`."""
        if self._index_of is None:  # reset wherever `labels` is set
            self._index_of = {name: i for i, name in enumerate(self.labels)}
        index = self._index_of
        if not self.multi_label:
            return index.get(row["label"], -1)
        hot = [0.0] * len(self.labels)
        for name in row["label"]:
            if name in index:  # a label only a split-off fraction has is not the model's
                hot[index[name]] = 1.0
        return hot

    def shown_input(self, row: dict[str, Any]) -> str:
        """A row's input as a prediction shows it."""
        return row[self.input_field]

    def _load_with_new_head(self, auto_class: Any, model_path: str,
                            train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        """The pre-trained model with a fresh head over the training split's labels, whose names
        go into the saved config (so a plain `pipeline` reports them)."""
        counts = Counter(name for r in train_rows for name in self.row_labels(r))
        self.labels, self._index_of = sorted(counts), None
        if not self.labels:
            raise UserError("train: no row has a label (multi-label rows all have an empty set)")
        if self.cfg.train.class_weights == "balanced":
            n = len(train_rows)
            self.class_weights = torch.tensor(  # multi-label: each label's negatives / positives
                [(n - counts[name]) / counts[name] if self.multi_label
                 else n / (len(self.labels) * counts[name]) for name in self.labels])
        model = auto_class.from_pretrained(
            model_path,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
            ignore_mismatched_sizes=True,
            **({"problem_type": MULTI_LABEL} if self.multi_label else {}),
            **self.model_kwargs,
        )
        if self.multi_label:
            self.default_metric = "micro_f1"  # type: ignore[misc]
            self._start_at_label_rates(model, [counts[name] / len(train_rows)
                                               for name in self.labels])
        self._check_threshold()
        return model

    def _check_threshold(self) -> None:
        """`eval.threshold` needs label sets, and `tuned` a validation split to tune on."""
        setting = self.cfg.eval.threshold
        if setting == THRESHOLD:
            return
        if not self.multi_label:
            raise UserError(f"eval.threshold = {setting!r}: applies to multi-label rows (a set "
                            "of labels per row); this run's rows have one label each")
        if setting == "tuned" and (self.cfg.data.validation is None or self.cfg.data.test is None):
            raise UserError("eval.threshold = 'tuned' chooses the threshold on the validation "
                            "split and reports on the test split, so it needs both: set "
                            "data.validation and data.test (each a file or a fraction of train)")
        if isinstance(setting, float):
            self.threshold = setting

    @property
    def tunes_threshold(self) -> bool:
        return bool(self.multi_label) and self.cfg.eval.threshold == "tuned"

    def _tuned_threshold(self, logits: torch.Tensor, rows: list[dict[str, Any]]) -> float:
        targets = np.array([self.label_target(r) for r in rows], dtype=int).reshape(len(rows), -1)
        return best_threshold(targets, logits.sigmoid().numpy(),
                              self.cfg.eval.metric or self.default_metric)

    def _start_at_label_rates(self, model: torch.nn.Module, rates: list[float]) -> None:
        """Set the new head's biases to each label's log-odds in the training split, so the
        untrained model already predicts every label at its rate (RetinaNet's prior
        initialization). From zero biases, the first steps of a multi-label run mostly push
        every logit down at once, the same way for every input; that push reaches the encoder
        and, on MovieLens genres from titles, collapsed it to one output for all inputs."""
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
                and m.out_features == len(rates) and m.bias is not None]
        if not head:
            return
        p = torch.tensor(rates).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            head[-1].bias.copy_(torch.log(p) - torch.log1p(-p))

    def _load_tuned_with_head(self, auto_class: Any, model_dir: Path) -> torch.nn.Module:
        """A tuned model; its label names come back from its config."""
        model = auto_class.from_pretrained(model_dir, **NO_HUB_KERNELS)
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self._index_of = None
        self.multi_label = model.config.problem_type == MULTI_LABEL  # other files must agree
        if self.multi_label:
            self.default_metric = "micro_f1"  # type: ignore[misc]
            self.threshold = float(getattr(model.config, THRESHOLD_KEY, THRESHOLD))
        return model

    def check_eval_rows(self, train: list[dict], rows: list[dict], split: str) -> list[dict]:
        """A held-out label the model never trained on cannot be predicted: refuse (or skip) it."""
        known = {name for r in train for name in self.row_labels(r)}
        kept = []
        for row in rows:
            unknown = [name for name in self.row_labels(row) if name not in known]
            if not unknown:
                kept.append(row)
                continue
            message = (f"{row[WHERE]}: field '{self._column('label')}': label {unknown[0]!r} "
                       f"does not occur in the training split (labels: {', '.join(sorted(known))})")
            if not self.cfg.data.skip_bad_rows:
                raise UserError(message)
        return kept

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss, summed over the batch (the loop divides by the window's examples):
        cross-entropy in fp32, with `train.label_smoothing` and `train.class_weights`. Balanced
        weights average 1 over the training split, so the loss keeps its scale. Multi-label:
        binary cross-entropy averaged over the labels (transformers' own scale), smoothing
        pulling each target towards 0.5, balanced weights as each label's positive weight."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        smoothing = self.cfg.train.label_smoothing
        if self.multi_label:
            targets = labels.float() * (1 - smoothing) + smoothing / 2
            per_label = F.binary_cross_entropy_with_logits(logits.float(), targets,
                                                           pos_weight=weight, reduction="none")
            return per_label.mean(-1).sum()
        return F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum",
                               label_smoothing=smoothing)

    @abstractmethod
    def _logits(self, model: torch.nn.Module, examples: list[Any]) -> torch.Tensor:
        """Logits `[len(examples), len(labels)]` on CPU, in the order given."""

    @abstractmethod
    def features(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> np.ndarray:
        """What the classification head sees, from the frozen pre-trained model."""

    def _result(self, logits: torch.Tensor, rows: list[dict[str, Any]],
                threshold: float | None = None) -> EvalResult:
        """Metrics and predictions from logits; multi-label at `threshold` (default: the task's)."""
        if self.multi_label:
            return self._multilabel_result(logits, rows, threshold or self.threshold)
        y_true = [self.label_target(r) for r in rows]
        probs = logits.softmax(-1)
        y_pred = probs.argmax(-1).tolist()
        metrics, details = classification_metrics(y_true, y_pred, self.labels)
        row_loss = F.cross_entropy(logits, torch.tensor(y_true), reduction="none")
        metrics["loss"] = float(row_loss.mean().item()) if len(rows) else 0.0
        scores = RowScores([r[WHERE] for r in rows])
        scores.add_mean("accuracy", [float(t == p) for t, p in zip(y_true, y_pred, strict=True)])
        scores.add_mean("loss", row_loss.tolist())
        predictions = [
            {"where": r[WHERE], "input": self.shown_input(r), "target": r["label"],
             "prediction": self.labels[p], "score": round(float(probs[i, p]), 4)}
            for i, (r, p) in enumerate(zip(rows, y_pred, strict=True))
        ]
        return EvalResult(metrics, details, predictions, scores)

    def _multilabel_result(self, logits: torch.Tensor, rows: list[dict[str, Any]],
                           threshold: float) -> EvalResult:
        targets = torch.tensor([self.label_target(r) for r in rows]).reshape(len(rows), -1)
        probs = logits.sigmoid()
        chosen = probs >= threshold
        metrics, details = multilabel_metrics(targets.numpy().astype(int),
                                              chosen.numpy().astype(int), self.labels)
        details["threshold"] = threshold
        row_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
        metrics["loss"] = float(row_loss.mean().item()) if len(rows) else 0.0
        true_positives = (chosen & (targets > 0)).sum(1)
        scores = RowScores([r[WHERE] for r in rows])
        scores.add("micro_f1", (2 * true_positives).tolist(),
                   (chosen.sum(1) + (targets > 0).sum(1)).tolist())  # 2TP / (2TP + FP + FN)
        scores.add_mean("subset_accuracy", (chosen == (targets > 0)).all(1).float().tolist())
        scores.add_mean("loss", row_loss.tolist())
        predictions = [
            {"where": r[WHERE], "input": self.shown_input(r), "target": list(r["label"]),
             "prediction": [self.labels[j] for j in range(len(self.labels)) if chosen[i, j]],
             "score": round(float(probs[i].max()), 4) if len(self.labels) else 0.0}
            for i, r in enumerate(rows)
        ]
        return EvalResult(metrics, details, predictions, scores)

    def _ranked(self, inputs: list[str], logits: torch.Tensor) -> list[dict[str, Any]]:
        """`predict`'s answer: the best label and score of each input, and its top three
        (multi-label: every label at or above the threshold, and the top three scores)."""
        results = []
        for item, p in zip(inputs, logits.sigmoid() if self.multi_label else logits.softmax(-1),
                           strict=True):
            top = p.topk(min(3, len(self.labels)))
            best = [{"label": self.labels[int(j)], "score": round(float(v), 4)}
                    for v, j in zip(top.values, top.indices, strict=True)]
            if self.multi_label:
                chosen = [name for name, q in zip(self.labels, p, strict=True)
                          if q >= self.threshold]
                results.append({"input": item, "labels": chosen, "top": best})
            else:
                results.append({"input": item, **best[0], "top": best})
        return results

    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        return self._result(self._logits(model, self.encode(rows, training=False)), rows)

    def validate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> dict[str, float]:
        """With a tuned threshold, each checkpoint is scored at the threshold best for it on
        the validation rows: the one `settle` gives the checkpoint that wins."""
        if not self.tunes_threshold:
            return super().validate(model, rows)
        logits = self._logits(model, self.encode(rows, training=False))
        return self._result(logits, rows, self._tuned_threshold(logits, rows)).metrics

    def settle(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> None:
        """A tuned threshold: chosen on the validation rows, kept in the model's config."""
        if self.tunes_threshold and rows:
            self.threshold = self._tuned_threshold(
                self._logits(model, self.encode(rows, training=False)), rows)
            setattr(model.config, THRESHOLD_KEY, self.threshold)

    def baseline(
        self, model: torch.nn.Module, train: list[dict[str, Any]], test: list[dict[str, Any]],
        validation: list[dict[str, Any]] | None = None,
    ) -> EvalResult:
        """Linear probe: logistic regression on frozen features (the new head is untrained)."""
        if self.multi_label:
            return self._multilabel_baseline(model, train, test, validation or [])
        probe, how = self.fit_probe(self.features(model, train),
                                    [self.label_target(r) for r in train])
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

    def _multilabel_baseline(
        self, model: torch.nn.Module, train: list[dict[str, Any]], test: list[dict[str, Any]],
        validation: list[dict[str, Any]],
    ) -> EvalResult:
        """One logistic regression per label on the frozen features (`fit_probe`); its
        probabilities become logits for the same metrics as the tuned model's, at a threshold
        tuned the same way as the tuned model's when that is asked for."""
        targets = np.array([self.label_target(r) for r in train], dtype=int)
        probe, how = self.fit_probe(self.features(model, train), targets)

        def logits(rows: list[dict[str, Any]]) -> torch.Tensor:
            p = np.clip(probe.predict_proba(self.features(model, rows)), 1e-7, 1 - 1e-7)
            return torch.from_numpy(np.log(p) - np.log1p(-p)).float()

        threshold = self.threshold
        if self.tunes_threshold and validation:
            threshold = self._tuned_threshold(logits(validation), validation)
            how += f"; threshold {threshold:g}, tuned on the validation split"
        result = self._result(logits(test), test, threshold)
        result.details["baseline"] = f"linear probe per label on frozen pooled features ({how})"
        return result

    def fit_probe(self, features: np.ndarray, labels: Any) -> tuple[Any, str]:
        """Logistic regression on standardized features, and how its regularization was chosen.

        The strength is chosen by stratified cross-validation on the training rows (log loss):
        no one value suits every feature set, and a badly regularized probe would make the
        'before' number unfairly low (on the food reviews, C=1 read 0.749 accuracy where the
        chosen C=0.01 reads 0.777). With fewer than two rows of some class there is nothing to
        cross-validate, and the task's `probe_c` is used. Multi-label targets (multi-hot rows)
        get one regression per label sharing one strength, chosen by plain k-fold on the mean
        binary log loss (label sets are too many to stratify by)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        regression = LogisticRegression(max_iter=2000, C=self.probe_c)
        if self.multi_label:
            estimator: Any = OneVsRestClassifier(regression)
            param, scoring, split = "onevsrestclassifier__estimator__C", _binary_log_likelihood, KFold
            folds = min(PROBE_FOLDS, len(labels))
            enough = folds >= 2
        else:
            estimator, param, scoring, split = regression, "logisticregression__C", "neg_log_loss", \
                StratifiedKFold
            folds = min(PROBE_FOLDS, *Counter(labels).values())
            enough = folds >= 2 and len(set(labels)) >= 2
        probe = make_pipeline(StandardScaler(), estimator)
        with warnings.catch_warnings():  # multi-label: a label absent from a fold is constant
            warnings.filterwarnings("ignore", message="Label not")
            if not enough:
                return probe.fit(features, labels), f"C={self.probe_c:g}"
            search = GridSearchCV(
                probe, {param: PROBE_CS}, scoring=scoring,
                cv=split(folds, shuffle=True, random_state=self.cfg.train.seed),
            ).fit(features, labels)
        chosen = search.best_params_[param]
        return search.best_estimator_, f"C={chosen:g}, chosen by {folds}-fold cross-validation"


def _binary_log_likelihood(estimator: Any, features: np.ndarray, targets: np.ndarray) -> float:
    """A multi-label probe's score for cross-validation: minus its mean binary log loss."""
    p = np.clip(estimator.predict_proba(features), 1e-7, 1 - 1e-7)
    return float(np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
