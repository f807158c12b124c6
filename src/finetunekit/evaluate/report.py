"""`report.html`: the before / after story of one run, as a page that opens from disk.

Everything comes from the run directory (config.yaml, run.json, data/report.json, metrics.jsonl,
eval/*.json, eval/predictions.jsonl), so `finetunekit report RUN` can rebuild it at any time, also
for a run that crashed half way (missing files just leave their section out). The page is static:
inline CSS, no scripts, images as relative `plots/*.png` links; every piece of user text (config
values, data, predictions) is HTML-escaped.

Task details (eval/*_details.json) are rendered by shape, not by task, so a new task's details
show up without changes here: `confusion_matrix` {labels, matrix} as an image, a mapping of
mappings (per_class) as one table, a list of records (most_confused, per-example WER) as a table
with a histogram of its metric columns, a mapping of numbers as a key / value table.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import atomic_write_text
from . import curves

EXAMPLES = 10  # predictions shown before / after
MAX_ROWS = 20  # rows of a details table
MAX_TEXT = 600  # characters of one input / prediction
LOWER_IS_BETTER = ("loss", "perplexity", "wer", "cer")
METRIC_HINTS = ("wer", "cer", "loss", "f1", "accuracy", "ndcg", "mrr", "hr@", "recall",
                "precision", "rouge", "exact_match", "perplexity")


def e(value: Any) -> str:
    """Escape anything for HTML text or attributes."""
    return html.escape(value if isinstance(value, str) else _text(value), quote=True)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    if value is None:
        return "–"
    return json.dumps(value, ensure_ascii=False)


def _clip(value: Any, limit: int = MAX_TEXT) -> str:
    text = _text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _img(plot: Path | None, run_dir: Path, alt: str) -> str:
    if plot is None:
        return ""
    rel = plot.relative_to(run_dir).as_posix()
    return f'<img src="{e(rel)}" alt="{e(alt)}">'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- sections ---------------------------------------------------------------------------------
class Report:
    """The run directory's files, read once, and the plots drawn from them."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.plots = run_dir / "plots"
        self.status: dict[str, Any] = _read_json(run_dir / "run.json") or {}
        config_file = run_dir / "config.yaml"
        self.config_text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
        self.data: dict[str, Any] = _read_json(run_dir / "data" / "report.json") or {}
        self.metrics = _read_jsonl(run_dir / "metrics.jsonl")
        self.before: dict[str, Any] = _read_json(run_dir / "eval" / "before.json") or {}
        self.after: dict[str, Any] = _read_json(run_dir / "eval" / "after.json") or {}
        self.before_details = _read_json(run_dir / "eval" / "before_details.json") or {}
        self.after_details = _read_json(run_dir / "eval" / "after_details.json") or {}
        self.comparison: dict[str, Any] = _read_json(run_dir / "eval" / "comparison.json") or {}
        self.predictions = _read_jsonl(run_dir / "eval" / "predictions.jsonl")
        self.warnings: list[str] = list(self.data.get("warnings", []))

    # the page's parts, in order: (anchor, title, render)
    def sections(self) -> list[tuple[str, str, Callable[[], str]]]:
        return [
            ("summary", "Summary", self.summary),
            ("results", "Before / after", self.results),
            ("curves", "Training curves", self.training),
            ("details", "Task details", self.details),
            ("examples", "Example predictions", self.examples),
            ("data", "Data", self.data_section),
            ("config", "Config", self.config),
        ]

    def summary(self) -> str:
        s = self.status
        rows = [("run", str(self.dir)), ("task", s.get("task")), ("model", s.get("model")),
                ("status", s.get("status")), ("steps", s.get("steps")),
                ("epochs", s.get("epochs"))]
        if s.get("best_step") is not None:
            rows.append(("best checkpoint",
                         f"step {s['best_step']}: {s.get('metric')} = {_text(s.get('best_metric'))}"
                         f" (validation)"))
        if s.get("stopped_early"):
            rows.append(("stopped early", "yes (no improvement for early_stopping.patience evals)"))
        if s.get("skipped_steps"):
            rows.append(("skipped steps", f"{s['skipped_steps']} (non-finite loss or gradient)"))
        if isinstance(s.get("started"), int | float) and isinstance(s.get("finished"), int | float):
            minutes = (s["finished"] - s["started"]) / 60
            rows.append(("duration", f"{minutes:.1f} min"))
        if isinstance(s.get("train_seconds"), int | float):
            rows.append(("training time", f"{s['train_seconds'] / 60:.1f} min"))
        for name in ("model", "adapter"):
            if (self.dir / name).is_dir():
                rows.append((f"{name} folder", str(self.dir / name)))
        body = _table(["", ""], [[e(k), e(v)] for k, v in rows if v is not None], "kv")
        if s.get("status") not in (None, "complete"):
            body += (f'<p class="warn">This run is not complete (status: {e(s.get("status"))}); '
                     "the report shows what it has written so far.</p>")
        return body

    def results(self) -> str:
        if not self.after and not self.before:
            return "<p>No evaluation results yet (eval/before.json, eval/after.json).</p>"
        names = [k for k in self.after if isinstance(self.after[k], int | float)]
        names += [k for k in self.before if k not in names and isinstance(self.before[k], int | float)]
        changes = self.comparison.get("metrics", {})
        rows = []
        for name in names:
            b, a = self.before.get(name), self.after.get(name)
            change, cls, interval = "–", "", ""
            if isinstance(a, int | float) and isinstance(b, int | float):
                diff = a - b
                change = f"{diff:+.4f}"
                better = diff < 0 if name.lower() in LOWER_IS_BETTER else diff > 0
                cls = "good" if better and diff else "bad" if diff else ""
            if name in changes:
                low, high = changes[name]["low"], changes[name]["high"]
                interval = f"[{low:+.4f}, {high:+.4f}]"
                if low <= 0 <= high:  # within the test set's noise: neither good nor bad
                    cls, interval = "", interval + " within noise"
            row = [e(name), e(b), e(a), f'<span class="{cls}">{e(change)}</span>']
            rows.append(row + [e(interval)] if changes else row)
        split = self.status.get("eval_split")
        where = f"<p>Held-out split: <b>{e(split)}</b>.</p>" if split else ""
        note = self.before_details.get("baseline") if isinstance(self.before_details, dict) else None
        if isinstance(note, str):
            where += f"<p>Before: {e(note)}.</p>"
        header = ["metric", "before", "after", "change"]
        if changes:
            header.append("95% interval")
            where += (f"<p>The 95% interval of a change is a paired bootstrap over the "
                      f"{e(self.comparison.get('rows'))} held-out rows (both models scored on the "
                      "same resampled rows); an interval that holds 0 is within this test set's "
                      "noise. Metrics that are not sums over rows (macro-F1, coverage) have "
                      "none.</p>")
        return where + _table(header, rows, "num")

    def training(self) -> str:
        train = curves.series(self.metrics, "loss")
        val = curves.series(self.metrics, "eval_loss")
        best = self.status.get("best_step")
        parts = [_img(curves.plot_loss(train, val, best, self.plots / "loss.png"), self.dir,
                      "training and validation loss")]
        over = curves.detect_overfitting(train, val)
        if over is not None:
            self.warnings.append(over.message())
            parts.append(f'<p class="warn">{e(over.message())}</p>')
        eval_keys = sorted({k for r in self.metrics for k in r
                            if k.startswith("eval_") and k != "eval_loss"})
        other = {k.removeprefix("eval_"): curves.series(self.metrics, k) for k in eval_keys}
        parts.append(_img(curves.plot_eval_metrics(other, best, self.plots / "eval_metrics.png"),
                          self.dir, "validation metrics"))
        parts.append(_img(curves.plot_lr(curves.series(self.metrics, "lr"),
                                         self.plots / "lr.png"), self.dir, "learning rate"))
        parts.append(_img(curves.plot_throughput(curves.series(self.metrics, "examples_per_s"),
                                                 curves.series(self.metrics, "tokens_per_s"),
                                                 self.plots / "throughput.png"),
                          self.dir, "throughput"))
        shown = "".join(f'<div class="plot">{p}</div>' for p in parts if p)
        return shown or "<p>No training metrics yet (metrics.jsonl).</p>"

    def details(self) -> str:
        before = self.before_details if isinstance(self.before_details, dict) else {}
        after = self.after_details if isinstance(self.after_details, dict) else {}
        keys = list(after) + [k for k in before if k not in after]
        keys = [k for k in keys if k != "baseline"]  # shown beside the results table
        if not keys:
            return "<p>This task wrote no details (eval/*_details.json).</p>"
        plain = [k for k in keys if _is_scalar(before.get(k)) and _is_scalar(after.get(k))]
        parts = []
        if plain:  # loose numbers and notes (rows, k, decoding) share one small table
            rows = [[e(k), e(_clip(before.get(k))), e(_clip(after.get(k)))] for k in plain]
            parts.append(_table(["", "before", "after"], rows, "num"))
        parts += [self._detail(k, before.get(k), after.get(k)) for k in keys if k not in plain]
        return "".join(parts)

    def _detail(self, key: str, before: Any, after: Any) -> str:
        title = f"<h3>{e(key.replace('_', ' '))}</h3>"
        if key == "confusion_matrix" or _is_confusion(after) or _is_confusion(before):
            imgs = []
            for side, value in (("before", before), ("after", after)):
                if _is_confusion(value):
                    # the same file name run.write_eval uses, so a rebuild replaces it
                    name = "confusion" if key == "confusion_matrix" else _slug(key)
                    path = curves.confusion_plot(value["matrix"], value["labels"],
                                                 self.plots / f"{name}_{side}.png",
                                                 f"{key.replace('_', ' ')} ({side})")
                    imgs.append(f"<figure>{_img(path, self.dir, f'{key} {side}')}"
                                f"<figcaption>{side}</figcaption></figure>")
            return title + f'<div class="pair">{"".join(imgs)}</div>'
        if _is_nested(after) or _is_nested(before):
            return title + _nested_table(before if isinstance(before, dict) else {},
                                         after if isinstance(after, dict) else {})
        if _is_records(after) or _is_records(before):
            return title + self._records(key, before, after)
        if _is_numbers(after) or _is_numbers(before):
            imgs = [_img(curves.plot_histogram(v, f"{key} ({side})",
                                               self.plots / f"{_slug(key)}_{side}.png"),
                         self.dir, f"{key} {side}")
                    for side, v in (("before", before), ("after", after)) if _is_numbers(v)]
            return title + f'<div class="pair">{"".join(imgs)}</div>'
        if isinstance(after, dict) or isinstance(before, dict):
            # loose values in one table; records, lists and mappings inside get their own view
            b, a = before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}
            names = list(a) + [k for k in b if k not in a]
            plain = [n for n in names if _is_scalar(b.get(n)) and _is_scalar(a.get(n))]
            rows = [[e(n), e(_clip(b.get(n))), e(_clip(a.get(n)))] for n in plain]
            inner = [self._detail(f"{key} {n}", b.get(n), a.get(n)) for n in names if n not in plain]
            return title + (_table(["", "before", "after"], rows, "num") if rows else "") + "".join(inner)
        return title + _table(["before", "after"], [[e(_clip(before)), e(_clip(after))]])

    def _records(self, key: str, before: Any, after: Any) -> str:
        parts = []
        for side, value in (("before", before), ("after", after)):
            if not _is_records(value):
                continue
            columns: list[str] = []
            for row in value:
                columns += [c for c in row if c not in columns]
            rows = [[e(_clip(r.get(c), 200)) for c in columns] for r in value[:MAX_ROWS]]
            more = (f"<p class=muted>{len(value) - MAX_ROWS} more rows not shown</p>"
                    if len(value) > MAX_ROWS else "")
            hists = []
            if len(value) >= 10:
                for c in columns:
                    nums = [r.get(c) for r in value]
                    if any(h in c.lower() for h in METRIC_HINTS) and _is_numbers(nums):
                        plot = curves.plot_histogram(nums, f"{c} per row ({side})",
                                                     self.plots / f"{_slug(key)}_{_slug(c)}_{side}.png")
                        hists.append(_img(plot, self.dir, f"{c} {side}"))
            parts.append(f"<div><h4>{side}</h4>{''.join(hists)}"
                         f"{_table([e(c) for c in columns], rows)}{more}</div>")
        return f'<div class="pair">{"".join(parts)}</div>'

    def examples(self) -> str:
        if not self.predictions:
            return "<p>No predictions yet (eval/predictions.jsonl).</p>"
        changed = [p for p in self.predictions if "before" in p and p.get("before") != p.get("after")]
        rest = [p for p in self.predictions if not ("before" in p and p.get("before") != p.get("after"))]
        chosen = (changed + rest)[:EXAMPLES]
        chosen.sort(key=self.predictions.index)
        mark = str(self.status.get("task", "")).endswith("classification")
        rows = []
        for p in chosen:
            source = f'<div class="muted">{e(p["where"])}</div>' if p.get("where") else ""
            row = [e(_clip(p.get("input"))) + source, e(_clip(p.get("target")))]
            for side in ("before", "after"):
                cls = ""
                if mark and side in p and "target" in p:
                    cls = "good" if p[side] == p["target"] else "bad"
                row.append(f'<span class="{cls}">{e(_clip(p.get(side)))}</span>')
            rows.append(row)
        intro = (f"<p>{len(chosen)} of {len(self.predictions)} held-out examples; those whose "
                 "prediction changed with training come first.</p>")
        return intro + _table(["input", "target", "before", "after"], rows, "examples")

    def data_section(self) -> str:
        splits = self.data.get("splits") or {}
        if not splits and not self.data:
            return "<p>No data report (data/report.json).</p>"
        rows = []
        for name, info in splits.items():
            length = info.get("length") or {}
            length_text = " / ".join(_text(length.get(k)) for k in ("min", "mean", "p50", "p95", "max")
                                     if k in length)
            labels = info.get("labels") or {}
            label_text = ", ".join(f"{k}: {v}" for k, v in labels.items())
            rows.append([e(name), e(info.get("rows")), e(length_text),
                         e(info.get("exact_duplicates")), e(info.get("also_in_train")),
                         e(_clip(label_text, 400))])
        parts = [_table(["split", "rows", "length min / mean / p50 / p95 / max", "duplicates",
                         "also in train", "labels"], rows)]
        data_warnings = self.data.get("warnings") or []
        if data_warnings:
            parts.append("<ul class=warnings>" + "".join(f"<li>{e(w)}</li>" for w in data_warnings)
                         + "</ul>")
        else:
            parts.append("<p>No data warnings.</p>")
        files = self.data.get("files") or []
        if len(files) > len(splits):  # some split mixes several files: what each brought
            parts.append("<h3>Files</h3>" + _table(
                ["file", "rows", "bad rows"],
                [[e(f.get("file")), e(f.get("rows")), e(f.get("bad_rows"))] for f in files]))
        bad = self.data.get("bad_rows") or []
        if bad:
            parts.append("<h3>Skipped rows</h3><ul>" + "".join(f"<li>{e(_clip(b, 300))}</li>"
                                                               for b in bad[:20]) + "</ul>")
        extra = {k: v for k, v in self.data.items() if k not in ("splits", "warnings", "bad_rows",
                                                                 "files")}
        if extra:
            parts.append(f"<pre>{e(json.dumps(extra, indent=2, ensure_ascii=False))}</pre>")
        return "".join(parts)

    def config(self) -> str:
        if not self.config_text:
            return "<p>No config.yaml.</p>"
        return f"<p>The resolved config (every default written out):</p><pre>{e(self.config_text)}</pre>"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_confusion(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("matrix"), list) and isinstance(
        value.get("labels"), list)


def _is_nested(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_numbers(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))


def _nested_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Per-class style table: one row per key, after values with the before value beside them."""
    keys = list(after) + [k for k in before if k not in after]
    columns: list[str] = []
    for k in keys:
        for source in (after, before):
            columns += [c for c in (source.get(k) or {}) if c not in columns]
    rows = []
    for k in keys:
        a, b = after.get(k) or {}, before.get(k) or {}
        cells = [e(k)]
        for c in columns:
            cell = e(_clip(a.get(c), 80)) if c in a else "–"
            if c in b and b.get(c) != a.get(c):
                cell += f' <span class="muted">(before {e(_clip(b.get(c), 80))})</span>'
            cells.append(cell)
        rows.append(cells)
    return _table([""] + [e(c) for c in columns], rows[:200], "num")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.45}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c7cbd6}
nav{padding:8px 28px;background:#e9ecf1;position:sticky;top:0}
nav a{margin-right:16px;color:#1d4ed8;text-decoration:none}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 20px;margin:16px 0}
h2{margin:4px 0 12px;font-size:18px} h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5} table.num td{font-variant-numeric:tabular-nums}
table.kv th{display:none} table.examples td{max-width:480px;word-wrap:break-word}
pre{background:#f0f2f5;padding:10px;overflow:auto;font-size:12px}
img{max-width:100%;height:auto} .plot{display:inline-block;margin:4px 12px 4px 0}
.pair{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start} figure{margin:0}
figcaption{text-align:center;color:#5b6478}
.good{color:#15803d;font-weight:600} .bad{color:#b91c1c;font-weight:600}
.muted{color:#6b7280;font-size:12px}
.warn,.warnings li{color:#92400e} .warn{background:#fef3c7;padding:8px 12px;border-radius:6px}
.error{background:#fee2e2;color:#991b1b;padding:8px 12px;border-radius:6px}
"""


def render(run_dir: Path) -> str:
    """The report page as a string (plots are written to run_dir/plots as a side effect)."""
    report = Report(run_dir)
    body = []
    for anchor, title, fn in report.sections():
        try:
            content = fn()
        except Exception as err:  # one broken section must not cost the user the whole page
            traceback.print_exc(file=sys.stderr)
            content = (f'<p class="error">This section could not be rendered: '
                       f"{e(type(err).__name__)}: {e(err)}</p>")
        body.append(f'<section id="{anchor}"><h2>{e(title)}</h2>{content}</section>')
    warnings = ""
    if report.warnings:
        items = "".join(f"<li>{e(w)}</li>" for w in report.warnings)
        warnings = f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>'
    nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t, _ in report.sections())
    s = report.status
    subtitle = " · ".join(e(x) for x in (s.get("task"), s.get("model"), s.get("status")) if x)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>finetunekit report: {e(run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{e(run_dir.name)}</h1><p>{subtitle} · report written {e(stamp)}</p></header>"
        f"<nav>{nav}</nav><main>{warnings}{''.join(body)}</main></body></html>\n"
    )


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.html (and its plots/) from the run directory's files."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml or run.json)")
    page = render(run_dir)
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path
