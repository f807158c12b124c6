"""Data statistics and warnings written to `data/report.json` before training.

Exact duplicates inflate scores and leakage (test rows that also appear in train) makes the
"after" number a lie; both are counted and warned about, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from .readers import WHERE, Table


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    arr = np.asarray(lengths)
    return {
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 1),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
    }


def first_places(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]
                 ) -> dict[Hashable, str]:
    """Each key's first row, as `file:line`: a warning shows both places of a repeat, so a
    user mixing sources sees which ones overlap."""
    places: dict[Hashable, str] = {}
    for row in rows:
        places.setdefault(key(row), row.get(WHERE, "?"))
    return places


def data_report(
    splits: dict[str, list[dict[str, Any]]],
    tables: list[Table],
    key: Callable[[dict[str, Any]], Hashable],
    length: Callable[[dict[str, Any]], int],
    label: Callable[[dict[str, Any]], Hashable] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Row counts, label balance, lengths, duplicates and cross-split leakage, with warnings."""
    report: dict[str, Any] = {"splits": {}, "warnings": [], "bad_rows": [], "files": []}
    for table in tables:  # every file read, so a mix of sources shows what each brought
        report["files"].append({"file": table.path, "rows": len(table.rows),
                                "bad_rows": len(table.bad_rows)})
        report["bad_rows"].extend(str(b) for b in table.bad_rows)
    if report["bad_rows"]:
        report["warnings"].append(f"{len(report['bad_rows'])} bad rows skipped (data.skip_bad_rows)")
    first_in_train = first_places(splits.get("train", []), key)
    for name, rows in splits.items():
        info: dict[str, Any] = {"rows": len(rows), "length": length_stats([length(r) for r in rows])}
        counts = Counter(key(r) for r in rows)
        dupes = sum(c - 1 for c in counts.values() if c > 1)
        info["exact_duplicates"] = dupes
        if dupes:
            first = first_in_train if name == "train" else first_places(rows, key)
            again = next((r for r in rows if first[key(r)] != r.get(WHERE, "?")), None)
            example = f", e.g. {first[key(again)]} = {again[WHERE]}" if again else ""
            report["warnings"].append(f"{name}: {dupes} exact duplicate rows{example}")
        if label is not None:
            balance = Counter(str(name) for r in rows for name in _each(label(r)))
            info["labels"] = dict(sorted(balance.items()))
            if name == "train" and len(balance) > 1:
                ratio = max(balance.values()) / max(1, min(balance.values()))
                if ratio >= 5:
                    report["warnings"].append(
                        f"train: labels are imbalanced ({ratio:.1f}x between most and least common)"
                    )
        if name != "train":
            leaked = [r for r in rows if key(r) in first_in_train]
            info["also_in_train"] = len(leaked)
            if leaked:
                report["warnings"].append(
                    f"{name}: {len(leaked)} rows also appear in train (leakage), e.g. "
                    f"{leaked[0].get(WHERE, '?')} = train {first_in_train[key(leaked[0])]}"
                )
        report["splits"][name] = info
    if extra:
        report.update(extra)
    return report


def _each(labels: Hashable) -> tuple[Hashable, ...]:
    """A row's labels one by one: a multi-label row's tuple counts each of its labels."""
    return labels if isinstance(labels, tuple) else (labels,)
