"""Many runs at a glance: `finetunekit runs` (a table of run directories) and `compare A B`.

Both only read run directories (run.json, config.yaml, eval/*.json), so they work on finished,
crashed and still-running runs alike and never load a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .evaluate.significance import RowScores, paired_changes


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists and scalars are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def tracker_config(config: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """The config as trackers accept it: flat keys, scalar values (TensorBoard's hparams refuse
    nested dicts, lists and None; MLflow and W&B are happy with the same flat form)."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in flatten(config).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, int | float | str | bool) else json.dumps(value)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file() or (path / "config.yaml").is_file()


@dataclass
class RunInfo:
    """What one line of `finetunekit runs` shows."""

    path: Path
    task: str
    model: str
    status: str
    metric: str | None  # the metric that picked the best checkpoint (or the first after metric)
    best: float | None  # its best validation value
    after: float | None  # its held-out value after training
    before: float | None

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        status = _read_json(path / "run.json")
        config: dict[str, Any] = {}
        if (path / "config.yaml").is_file():
            try:
                config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                config = {}
        after = _read_json(path / "eval" / "after.json")
        before = _read_json(path / "eval" / "before.json")
        metric = status.get("metric")
        if metric not in after:  # no objective (no validation split) or the run has no after yet
            numbers = [k for k, v in after.items() if isinstance(v, int | float)]
            metric = numbers[0] if numbers else metric
        return cls(
            path=path,
            task=str(status.get("task") or config.get("task") or "?"),
            model=str(status.get("model") or config.get("model") or "?"),
            status=str(status.get("status") or "unknown"),
            metric=metric,
            best=status.get("best_metric") if status.get("metric") == metric else None,
            after=after.get(metric) if metric else None,
            before=before.get(metric) if metric else None,
        )


def list_runs(root: Path) -> list[RunInfo]:
    """Run directories directly under `root` (or `root` itself when it is one), by name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (pass the folder that holds your runs)")
    folders = [root] if is_run_dir(root) else []
    folders += sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p))
    return [RunInfo.read(p) for p in folders]


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def format_runs(runs: list[RunInfo], root: Path) -> str:
    if not runs:
        return f"no runs in {root}"
    header = ["run", "task", "model", "status", "metric", "best (val)", "before", "after"]
    rows = []
    for r in runs:
        name = r.path.name if r.path != Path(root) else str(r.path)
        rows.append([name, r.task, r.model, r.status, r.metric or "-", _num(r.best),
                     _num(r.before), _num(r.after)])
    return _columns([header, *rows])


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


# --- compare ----------------------------------------------------------------------------------
@dataclass
class Comparison:
    a: Path
    b: Path
    metrics: list[tuple[str, str, Any, Any]]  # (split, name, value in A, value in B)
    config: list[tuple[str, Any, Any]]  # (flat key, value in A, value in B), differing keys only
    # B's tuned model minus A's, with the paired 95% interval, where both scored the same rows
    changes: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: int = 0


_MISSING = object()


def compare(a: Path, b: Path) -> Comparison:
    """Metric values side by side (before and after) and the config keys that differ."""
    a, b = Path(a), Path(b)
    for path in (a, b):
        if not is_run_dir(path):
            raise UserError(f"{path}: not a run directory (no run.json or config.yaml)")
    metrics: list[tuple[str, str, Any, Any]] = []
    for split in ("before", "after"):
        ma = _read_json(a / "eval" / f"{split}.json")
        mb = _read_json(b / "eval" / f"{split}.json")
        for name in list(ma) + [k for k in mb if k not in ma]:
            metrics.append((split, name, ma.get(name), mb.get(name)))
    ca, cb = flatten(_config(a)), flatten(_config(b))
    # a key one config lacks (written by an older version) and the other has as null: the same
    config = [(k, ca.get(k, _MISSING), cb.get(k, _MISSING))
              for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    return Comparison(a, b, metrics, config, *_paired_after(a, b))


def _paired_after(a: Path, b: Path) -> tuple[dict[str, dict[str, float]], int]:
    """The tuned models' changes from A to B with their paired interval: only where both runs
    kept per-row scores of the same held-out rows (eval/after_rows.json)."""
    files = [path / "eval" / "after_rows.json" for path in (a, b)]
    if not all(f.is_file() for f in files):
        return {}, 0
    try:
        sa, sb = (RowScores.from_json(json.loads(f.read_text())) for f in files)
    except (ValueError, KeyError, TypeError):  # a damaged file: no interval, not a crash
        return {}, 0
    return paired_changes(sa, sb), len(sa.rows)


def _config(path: Path) -> dict[str, Any]:
    file = path / "config.yaml"
    if not file.is_file():
        return {}
    try:
        value = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{file}: not valid YAML ({err})") from None
    return value if isinstance(value, dict) else {}


def _value(value: Any) -> str:
    if value is _MISSING:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


def format_comparison(c: Comparison) -> str:
    lines = [f"A: {c.a}", f"B: {c.b}", ""]
    if c.metrics:
        rows = [["split", "metric", "A", "B", "B - A"] + (["95% interval"] if c.changes else [])]
        for split, name, va, vb in c.metrics:
            both = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
            row = [split, name, _num(va), _num(vb), f"{vb - va:+.4f}" if both else "-"]
            change = c.changes.get(name) if split == "after" else None
            if c.changes:
                row.append(f"[{change['low']:+.4f}, {change['high']:+.4f}]" if change else "")
            rows.append(row)
        lines.append(_columns(rows))
        if c.changes:
            lines.append(f"(interval of B - A after tuning: paired bootstrap over the {c.rows} "
                         "held-out rows both runs scored; one that holds 0 is within noise)")
    else:
        lines.append("no metrics in either run (eval/before.json, eval/after.json)")
    lines.append("")
    if c.config:
        rows = [["config key", "A", "B"]]
        rows += [[key, _value(va), _value(vb)] for key, va, vb in c.config]
        lines.append(_columns(rows))
    else:
        lines.append("configs are identical")
    return "\n".join(lines)
