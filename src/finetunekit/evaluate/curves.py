"""Training curves for the run report: loss, eval metrics, learning rate, throughput.

The numbers come from `metrics.jsonl` (training lines carry `loss`, eval lines `eval_*`). The
overfitting check is a pure function of those numbers so it can be tested without plotting, and
matplotlib is imported only when a plot is drawn (Agg backend: no display needed).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Series = list[tuple[int, float]]


def series(records: Sequence[dict[str, Any]], key: str) -> Series:
    """(step, value) pairs of one metric, finite values only, sorted by step."""
    points = [
        (int(r["step"]), float(r[key]))
        for r in records
        if isinstance(r.get(key), int | float) and "step" in r and math.isfinite(float(r[key]))
    ]
    return sorted(points)


# --- overfitting ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overfitting:
    """Validation loss rose after its minimum while training loss kept falling."""

    best_step: int  # where validation loss was lowest
    val_best: float
    val_last: float
    train_at_best: float
    train_last: float

    def message(self) -> str:
        return (
            f"possible overfitting: validation loss rose from {self.val_best:.4f} (step "
            f"{self.best_step}) to {self.val_last:.4f} while training loss fell from "
            f"{self.train_at_best:.4f} to {self.train_last:.4f}; prefer the checkpoint near step "
            f"{self.best_step}, fewer epochs, a lower learning rate or more data"
        )


def detect_overfitting(
    train: Series, val: Series, min_rise: float = 0.05, min_evals_after: int = 2, window: int = 3
) -> Overfitting | None:
    """Flag a run whose validation loss rises while its training loss falls.

    Validation loss must end at least `min_rise` (relative) above its minimum with at least
    `min_evals_after` evaluations after that minimum, so one noisy evaluation is not enough.
    Training loss is compared as the mean of up to `window` logged values at or before the
    minimum's step against the mean of the last `window` values after it, which smooths
    mini-batch noise.
    """
    if len(val) < 1 + min_evals_after or not train:
        return None
    best_i = min(range(len(val)), key=lambda i: val[i][1])
    best_step, val_best = val[best_i]
    val_last = val[-1][1]
    if len(val) - 1 - best_i < min_evals_after:
        return None
    if val_last <= val_best + min_rise * abs(val_best):
        return None
    upto = [v for s, v in train if s <= best_step] or [train[0][1]]
    after = [v for s, v in train if s > best_step]
    if not after:
        return None
    train_at_best = sum(upto[-window:]) / len(upto[-window:])
    train_last = sum(after[-window:]) / len(after[-window:])
    if train_last >= train_at_best:
        return None
    return Overfitting(best_step, val_best, val_last, train_at_best, train_last)


# --- plots ------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Save a figure atomically (temp file beside it, then rename) and free its memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        _pyplot().close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _line(ax: Any, points: Series, **style: Any) -> list[Any]:
    """Plot (step, value) points; few points get markers (one point alone draws no line)."""
    if len(points) < 5:
        style.setdefault("marker", "o")
    return ax.plot(*zip(*points, strict=True), **style)


def _legend(ax: Any, entries: int) -> None:
    if entries > 4:  # many metrics (ranking): keep the legend off the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()


def _mark_best(ax: Any, best_step: int | None) -> None:
    if best_step is not None:
        ax.axvline(best_step, color="tab:green", linestyle="--", linewidth=1,
                   label=f"best checkpoint (step {best_step})")


def plot_loss(train: Series, val: Series, best_step: int | None, path: Path) -> Path | None:
    """Training and validation loss over steps, the best checkpoint as a dashed line."""
    if not train and not val:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if train:
        _line(ax, train, label="training loss", color="tab:blue")
    if val:
        _line(ax, val, marker="o", label="validation loss", color="tab:orange")
    _mark_best(ax, best_step)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_eval_metrics(curves: dict[str, Series], best_step: int | None, path: Path) -> Path | None:
    """Validation metrics other than loss (accuracy, WER, ...) over steps."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, points in curves.items():
        _line(ax, points, marker="o", label=name)
    _mark_best(ax, best_step)
    ax.set_xlabel("step")
    ax.set_title("Validation metrics")
    ax.grid(alpha=0.3)
    _legend(ax, len(curves) + (best_step is not None))
    return _save(fig, path)


def plot_lr(lr: Series, path: Path) -> Path | None:
    if not lr:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    _line(ax, lr, color="tab:purple")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_throughput(examples: Series, tokens: Series, path: Path) -> Path | None:
    """Examples/s and, when the task counts tokens, tokens/s (side by side: the two are
    proportional for fixed-length batches, so on one axis one line would hide the other)."""
    panels = [(name, points, color) for name, points, color in
              (("examples/s", examples, "tab:blue"), ("tokens/s", tokens, "tab:red")) if points]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3), squeeze=False)
    for ax, (name, points, color) in zip(axes[0], panels, strict=True):
        _line(ax, points, color=color)
        ax.set_xlabel("step")
        ax.set_title(f"Throughput ({name})")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_histogram(values: Sequence[float], title: str, path: Path) -> Path | None:
    """Distribution of a per-example score (e.g. WER per utterance)."""
    values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(values, bins=min(30, max(5, len(values) // 5)), color="tab:blue", alpha=0.8)
    ax.set_title(title)
    ax.set_ylabel("examples")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_plot(matrix: Sequence[Sequence[float]], labels: Sequence[str], path: Path,
                   title: str) -> Path:
    """A confusion matrix image; uses the shared `evaluate.plots.plot_confusion` when present."""
    try:
        from .plots import plot_confusion
    except ImportError:
        plot_confusion = None
    if plot_confusion is not None:
        plot_confusion(matrix, list(labels), path, title)
        return path
    return _plot_confusion(matrix, labels, path, title)


def _plot_confusion(matrix: Sequence[Sequence[float]], labels: Sequence[str], path: Path,
                    title: str) -> Path:
    """Fallback confusion plot (rows: true label, columns: prediction), counts in the cells."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix, dtype=float)
    n = len(labels)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), [str(x) for x in labels], rotation=45 if n > 4 else 0, ha="right")
    ax.set_yticks(range(n), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        high = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]:g}", ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > high else "black")
    return _save(fig, path)
