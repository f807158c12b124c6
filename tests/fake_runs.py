"""Fake run directories for the report / runs / compare tests: the files a run writes, no model.

The numbers are made up but shaped exactly like run.py writes them (DESIGN.md's run directory
contract), so the readers are tested against the contract without minutes of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def healthy_metrics(steps: int = 20, eval_every: int = 5) -> list[dict[str, Any]]:
    """Training and validation loss both fall."""
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "epoch": step / 10, "loss": 1.0 / step ** 0.5,
                      "lr": 1e-4 * (1 - step / steps), "grad_norm": 1.0,
                      "examples_per_s": 30.0 + step % 3, "tokens_per_s": 900.0 + step})
        if step % eval_every == 0:
            lines.append({"step": step, "epoch": step / 10, "eval_loss": 0.9 / step ** 0.3,
                          "eval_accuracy": 0.5 + step / 50, "eval_macro_f1": 0.4 + step / 60})
    return lines


def overfit_metrics(steps: int = 40, eval_every: int = 5) -> list[dict[str, Any]]:
    """Training loss keeps falling; validation loss bottoms out at step 15 and climbs after."""
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "epoch": step / 10, "loss": 1.0 / step,
                      "lr": 1e-4, "grad_norm": 1.0, "examples_per_s": 30.0})
        if step % eval_every == 0:
            val = 0.6 + 0.02 * abs(step - 15) * (3 if step > 15 else 1)
            lines.append({"step": step, "epoch": step / 10, "eval_loss": val,
                          "eval_accuracy": 0.8 - 0.002 * abs(step - 15)})
    return lines


def make_run(
    folder: Path,
    metrics: list[dict[str, Any]] | None = None,
    lr: float = 1e-4,
    after_accuracy: float = 0.8,
    text: str = HOSTILE,
    model: str = "builtin:minilm",
    with_details: bool = True,
) -> Path:
    """A complete text-classification run directory, with `text` planted in user-visible places."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "task": "text-classification", "model": model,
        "data": {"train": f"data/{text}.jsonl", "validation": 0.1, "test": None,
                 "columns": {"text": "review", "label": "score"}},
        "peft": {"method": "none", "r": 16},
        "train": {"epochs": 3, "lr": lr, "batch_size": 8, "seed": 42},
        "trackers": [],
        "output": str(folder),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    best = [m for m in (metrics or []) if "eval_accuracy" in m]
    best_line = max(best, key=lambda m: m["eval_accuracy"]) if best else None
    _write_json(folder / "run.json", {
        "status": "complete", "task": "text-classification", "model": model,
        "started": 1000.0, "finished": 1090.0, "steps": 20, "epochs": 2.0,
        "best_step": best_line["step"] if best_line else None,
        "best_metric": best_line["eval_accuracy"] if best_line else None,
        "metric": "accuracy", "eval_split": "validation", "stopped_early": False,
    })
    _write_json(folder / "data" / "report.json", {
        "splits": {
            "train": {"rows": 90, "length": {"min": 3, "mean": 20.5, "p50": 18.0, "p95": 40.0,
                                             "max": 60}, "exact_duplicates": 1,
                      "labels": {"great": 45, text: 45}},
            "validation": {"rows": 10, "length": {"min": 4, "mean": 19.0, "p50": 18.0,
                                                  "p95": 30.0, "max": 33},
                           "exact_duplicates": 0, "labels": {"great": 5, text: 5},
                           "also_in_train": 0},
        },
        "warnings": [f"train: 1 exact duplicate rows {text}"],
        "bad_rows": [],
        "files": [{"file": "data/reviews-a.jsonl", "rows": 60, "bad_rows": 0},
                  {"file": f"data/{text}.csv", "rows": 30, "bad_rows": 0},
                  {"file": "data/validation.jsonl", "rows": 10, "bad_rows": 0}],
    })
    if metrics:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    labels = ["great", text]
    _write_json(folder / "eval" / "before.json",
                {"accuracy": 0.5, "macro_f1": 0.33, "loss": 0.69})
    _write_json(folder / "eval" / "after.json",
                {"accuracy": after_accuracy, "macro_f1": after_accuracy - 0.05, "loss": 0.4})
    if with_details:
        for side, m in (("before", [[5, 0], [5, 0]]), ("after", [[4, 1], [1, 4]])):
            _write_json(folder / "eval" / f"{side}_details.json", {
                "per_class": {lab: {"precision": 0.5, "recall": 0.6 if side == "after" else 0.5,
                                    "f1": 0.55, "support": 5} for lab in labels},
                "confusion_matrix": {"labels": labels, "matrix": m},
                "most_confused": [{"true": text, "predicted": "great", "count": 1}],
            })
    predictions = []
    for i in range(14):
        target = "great" if i % 2 == 0 else text
        predictions.append({"where": f"test.jsonl:{i + 1}", "input": f"review {i} {text}",
                            "target": target, "before": "great",
                            "after": target if i % 3 else "great"})
    (folder / "eval" / "predictions.jsonl").write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8")
    return folder
