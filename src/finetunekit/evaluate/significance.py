"""Is a change from one model to another larger than the noise of the held-out set?

Two models scored on the same held-out rows differ by luck of which rows were drawn as much as by
skill: 1,000 test rows put a standard error of about 1.5 points on an accuracy near 0.8, and more
on the difference of two models that disagree on many rows. A paired bootstrap answers with an
interval: draw the rows again with replacement (the same draw for both models, since their errors
on a row are correlated), recompute both metrics, and take the middle 95% of the differences.

A metric takes part when it is a ratio of sums over rows, `sum(numerators) / sum(denominators)`,
which covers the usual headline figures: a mean over rows (accuracy, exact match, NDCG, a row's
loss: denominators of 1), a corpus rate (WER: word errors over reference words; a loss per
token: summed loss over tokens) and micro-F1 (2TP over 2TP + FP + FN). Figures that are not sums
over rows (macro-F1 averages per-class F1s; catalogue coverage) get no interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass
class RowScores:
    """Per-row numerators and denominators of a model's ratio-of-sums metrics on its held-out
    rows (`rows` names them, so two results are paired only on the same rows in the same order)."""

    rows: list[str]
    metrics: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    def add_mean(self, name: str, values: Sequence[float]) -> None:
        """A metric that is the mean of one value per row."""
        self.add(name, values, [1.0] * len(values))

    def add(self, name: str, numerators: Sequence[float], denominators: Sequence[float]) -> None:
        if not len(numerators) == len(denominators) == len(self.rows):
            raise ValueError(f"{name}: {len(numerators)} numerators and {len(denominators)} "
                             f"denominators for {len(self.rows)} rows")
        self.metrics[name] = ([float(x) for x in numerators], [float(x) for x in denominators])

    def value(self, name: str) -> float:
        num, den = self.metrics[name]
        return _ratio(np.sum(num), np.sum(den))

    def to_json(self) -> dict:
        return {"rows": self.rows, "metrics": {k: [n, d] for k, (n, d) in self.metrics.items()}}

    @classmethod
    def from_json(cls, data: dict) -> RowScores:
        return cls(list(data["rows"]), {k: (list(n), list(d)) for k, (n, d) in data["metrics"].items()})


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray | float:
    """num / den, and 0 where den is 0 (micro-F1 with no positive anywhere: scikit-learn's 0)."""
    num_a, den_a = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.divide(num_a, den_a, out=np.zeros_like(num_a), where=den_a != 0)
    return float(out) if out.ndim == 0 else out


def paired_changes(before: RowScores, after: RowScores, resamples: int = RESAMPLES,
                   seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, float]]:
    """For every metric both hold, on the same rows: before, after, the change and its paired
    bootstrap interval (`low`, `high`). Empty when the rows differ (nothing to pair)."""
    names = [n for n in after.metrics if n in before.metrics]
    n = len(after.rows)
    if before.rows != after.rows or n == 0 or not names:
        return {}
    rng = np.random.default_rng(seed)
    changes = {name: np.empty(resamples) for name in names}
    chunk = max(1, min(resamples, 4_000_000 // n))  # a [chunk, rows] weight matrix at a time
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        for name in names:
            stats = [_ratio(weights @ np.asarray(side.metrics[name][0]),
                            weights @ np.asarray(side.metrics[name][1]))
                     for side in (before, after)]
            changes[name][start : start + size] = stats[1] - stats[0]
    tail = (1 - level) / 2
    result = {}
    for name in names:
        low, high = np.quantile(changes[name], [tail, 1 - tail])
        b, a = before.value(name), after.value(name)
        result[name] = {"before": b, "after": a, "change": a - b,
                        "low": float(low), "high": float(high)}
    return result
