"""Plots written as PNG files into the run directory (the HTML report embeds them).

matplotlib runs on its file-only backend (Agg): training machines have no display, and a plot
must never open a window or need a GUI toolkit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def plot_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str
) -> Path:
    """Draw a confusion matrix (rows: true label, columns: predicted) with counts in the cells.

    Colours are normalised per true label (row recall), so a rare class's mistakes are as visible
    as a frequent one's; the printed numbers stay raw counts.
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(labels)
    side = max(4.0, 0.55 * n + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true label")
        ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                                fontsize=8, color="white" if share[i, j] > 0.5 else "black")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # never a half-written PNG under the real name
    return path
