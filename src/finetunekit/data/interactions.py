"""Interaction logs and item tables for recommendation: reading, checks and splits by time.

An interaction row is (user, item, rating, time); ratings become positives by a threshold. The
checks need more than one row at a time (unknown item ids need the item table, duplicates need
the earlier rows, too-short histories need the whole user), so this reader keeps that state; like
`readers.read_table` it names file, line and field, and with `data.skip_bad_rows` it drops the
bad rows (or users) and lists them in the data report instead of stopping.

Splits are by time, never random, so no user's future leaks into training: leave-last-out (per
user: the last positive is the test target, the one before it validation) or a global time cut.
Each held-out row carries the user's history at that moment (positives before it, time order) and
everything the user had interacted with by then (excluded from the ranking).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UserError
from .readers import WHERE, BadRow, RowError, Table, iter_records


@dataclass
class Catalogue:
    """Every recommendable item: id, the text the encoder reads, and a display title."""

    ids: list[str]
    texts: list[str]
    titles: list[str]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


def normalize_id(value: Any) -> str | None:
    """Ids compare as text: 42 (Parquet), "42" (CSV) and 42.0 (pandas) are the same item."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


def parse_time(value: Any) -> float:
    """Unix seconds from a number, a numeric string, an ISO 8601 date or a datetime."""
    if isinstance(value, bool) or value is None:
        raise RowError(None, "missing timestamp")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RowError(None, f"expected a timestamp, got {value!r}")
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RowError(None, f"expected Unix seconds or an ISO 8601 date, got {text!r}") from None
        return parse_time(parsed)
    raise RowError(None, f"expected Unix seconds or an ISO 8601 date, got {value!r}")


def _text_value(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip().replace("|", ", ")
    return text or None


def item_text(record: dict[str, Any], columns: list[str]) -> tuple[str, str]:
    """(text, title): the first column's value as the title, the others as 'column: value'."""
    parts = []
    title = None
    for i, column in enumerate(columns):
        value = _text_value(record.get(column))
        if value is None:
            continue
        if i == 0:
            title = value
            parts.append(value)
        else:
            parts.append(f"{column}: {value}")
    if not parts:
        raise RowError(columns[0], f"no text in any of the item columns ({', '.join(columns)})")
    return ". ".join(parts), title or parts[0]


def read_items(
    path: Path, display: str, id_column: str, text_columns: list[str] | None, skip_bad_rows: bool
) -> tuple[Catalogue, list[BadRow]]:
    """The item table: one row per item id, text from `text_columns` (None: all but the id)."""
    if not path.is_file():
        raise UserError(f"{display}: item table not found (data.items)")
    ids, texts, titles, bad = [], [], [], []
    first_line: dict[str, int] = {}
    for number, record in iter_records(path):
        try:
            if isinstance(record, Exception):
                raise record
            if id_column not in record:
                raise RowError(id_column, "missing item id column (the item table needs the "
                               "same id column as the interactions; check data.columns)")
            item = normalize_id(record[id_column])
            if item is None:
                raise RowError(id_column, "missing item id")
            if item in first_line:
                raise RowError(id_column, f"duplicate item id {item!r} (first at line "
                               f"{first_line[item]})")
            columns = text_columns or [c for c in record if c != id_column]
            missing = [c for c in columns if c not in record]
            if missing:
                raise RowError(missing[0], f"missing column (recommendation.item_columns: {columns})")
            text, title = item_text(record, columns)
        except RowError as err:
            problem = BadRow(f"{display}:{number}", err.field, err.message)
            if not skip_bad_rows:
                raise UserError(str(problem)) from None
            bad.append(problem)
            continue
        first_line[item] = number
        ids.append(item)
        texts.append(text)
        titles.append(title)
    if not ids:
        raise UserError(f"{display}: no usable items")
    return Catalogue(ids, texts, titles), bad


@dataclass
class InteractionRules:
    """What makes an interaction row valid; `columns` maps our field names to the file's."""

    columns: dict[str, str]
    threshold: float | None
    min_history: int
    skip_bad_rows: bool = False
    max_rows: int | None = None

    def column(self, name: str) -> str:
        return self.columns.get(name, name)


def check_interaction(row: dict[str, Any], rules: InteractionRules, catalogue: Catalogue,
                      items_display: str) -> dict[str, Any]:
    """One renamed record -> {user, item, rating, time, positive}; RowError names the field."""
    out: dict[str, Any] = {}
    for name in ("user", "item"):
        if name not in row:
            raise RowError(rules.column(name), "missing (check data.columns)")
        out[name] = normalize_id(row[name])
        if out[name] is None:
            raise RowError(rules.column(name), f"missing {name} id")
    if out["item"] not in catalogue.index:
        raise RowError(rules.column("item"), f"unknown item id {out['item']!r} (not in the item "
                       f"table {items_display})")
    rating = row.get("rating")
    if rules.threshold is not None:
        if "rating" not in row:
            raise RowError(rules.column("rating"), "missing (recommendation.rating_threshold is "
                           "set; set it to null to treat every interaction as positive)")
        try:
            rating = float(rating)
        except (TypeError, ValueError):
            raise RowError(rules.column("rating"), f"expected a number, got {rating!r}") from None
        if math.isnan(rating):
            raise RowError(rules.column("rating"), "missing rating")
    if "timestamp" not in row:
        raise RowError(rules.column("timestamp"), "missing (check data.columns; splits by time "
                       "need a timestamp on every interaction)")
    try:
        out["time"] = parse_time(row["timestamp"])
    except RowError as err:
        raise RowError(rules.column("timestamp"), err.message) from None
    out["rating"] = rating if isinstance(rating, int | float) else None
    out["positive"] = rules.threshold is None or rating >= rules.threshold
    return out


def read_interactions(path: Path, display: str, rules: InteractionRules, catalogue: Catalogue,
                      items_display: str, needed_positives: int) -> Table:
    """Read and check the interaction log; users with too few positives are bad too."""
    if not path.is_file():
        raise UserError(f"{display}: data file not found")
    reverse = {source: ours for ours, source in rules.columns.items()}
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    first_line: dict[tuple[str, str], int] = {}
    for number, record in iter_records(path):
        where = f"{display}:{number}"
        try:
            if isinstance(record, Exception):
                raise record
            row = check_interaction({reverse.get(k, k): v for k, v in record.items()}, rules,
                                    catalogue, items_display)
            key = (row["user"], row["item"])
            if key in first_line:
                raise RowError(rules.column("item"), f"duplicate interaction: user {key[0]!r} and "
                               f"item {key[1]!r} already at line {first_line[key]}")
        except RowError as err:
            problem = BadRow(where, err.field, err.message)
            if not rules.skip_bad_rows:
                raise UserError(str(problem)) from None
            bad.append(problem)
            continue
        first_line[key] = number
        row[WHERE] = where
        rows.append(row)
        if rules.max_rows is not None and len(rows) >= rules.max_rows:
            break
    rows = _drop_short_histories(rows, rules, needed_positives, bad)
    if not rows:
        detail = f" ({len(bad)} bad rows skipped, first: {bad[0]})" if bad else ""
        raise UserError(f"{display}: no usable interactions{detail}")
    return Table(display, rows, bad)


def _drop_short_histories(rows: list[dict[str, Any]], rules: InteractionRules, needed: int,
                          bad: list[BadRow]) -> list[dict[str, Any]]:
    """Users with fewer than `needed` positives cannot be trained and evaluated on."""
    positives: dict[str, int] = defaultdict(int)
    first: dict[str, str] = {}
    for row in rows:
        positives[row["user"]] += row["positive"]
        first.setdefault(row["user"], row[WHERE])
    short = {u for u in first if positives[u] < needed}
    for user in sorted(short, key=lambda u: first[u]):
        problem = BadRow(first[user], rules.column("user"),
                         f"user {user!r} has {positives[user]} positive interactions, fewer than "
                         f"the {needed} needed (recommendation.min_history, plus one per held-out "
                         "split); set data.skip_bad_rows to drop such users")
        if not rules.skip_bad_rows:
            raise UserError(str(problem))
        bad.append(problem)
    return [r for r in rows if r["user"] not in short]


# --- splits by time -------------------------------------------------------------------------
def by_user(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each user's interactions in time order (file order breaks ties: a stable sort)."""
    users: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        users[row["user"]].append(row)
    return {u: sorted(rs, key=lambda r: r["time"]) for u, rs in users.items()}


def held_out_row(target: dict[str, Any], before: list[dict[str, Any]]) -> dict[str, Any]:
    """A held-out target with the user's state at that moment (history and seen items)."""
    return {
        "user": target["user"], "item": target["item"], "time": target["time"],
        "history": [r["item"] for r in before if r["positive"]],
        "seen": [r["item"] for r in before],
        WHERE: target[WHERE],
    }


def leave_last_out(rows: list[dict[str, Any]], validation: bool) -> dict[str, list[dict[str, Any]]]:
    """Per user: the last positive is test, the one before validation; train is strictly before.

    Interactions after the user's first held-out positive never enter training (those between
    the validation and the test target are part of the test row's history; later negatives are
    dropped), so every held-out target is at least as late as all of the user's training rows.
    """
    train, val, test = [], [], []
    for seq in by_user(rows).values():
        pos_at = [i for i, r in enumerate(seq) if r["positive"]]
        held = pos_at[-2:] if validation else pos_at[-1:]
        if len(pos_at) <= len(held):
            continue  # nothing left to learn from (kept out by the min_history check)
        train.extend(seq[: held[0]])
        if validation:
            val.append(held_out_row(seq[held[0]], seq[: held[0]]))
        test.append(held_out_row(seq[held[-1]], seq[: held[-1]]))
    splits = {"train": train}
    if validation:
        splits["validation"] = val
    splits["test"] = test
    return splits


def time_cut(rows: list[dict[str, Any]], validation: float | None,
             test: float) -> dict[str, list[dict[str, Any]]]:
    """A global cut: the last `test` share of interactions (by time) is the test period, the
    `validation` share before it the validation period; each user with history before a period
    is evaluated on their first positive inside it."""
    times = sorted(r["time"] for r in rows)
    t_test = times[min(len(times) - 1, int(len(times) * (1 - test)))]
    t_val = times[int(len(times) * (1 - test - (validation or 0)))] if validation else t_test
    train, val_rows, test_rows = [], [], []
    for seq in by_user(rows).values():
        train.extend(r for r in seq if r["time"] < t_val)
        for start, end, out in ((t_val, t_test, val_rows), (t_test, math.inf, test_rows)):
            if out is val_rows and not validation:
                continue
            for i, r in enumerate(seq):
                if r["positive"] and start <= r["time"] < end:
                    before = seq[:i]
                    if any(b["positive"] and b["time"] < t_val for b in before):
                        out.append(held_out_row(r, before))
                    break
    splits = {"train": train}
    if validation:
        splits["validation"] = val_rows
    splits["test"] = test_rows
    return splits


def mark_cold(splits: dict[str, list[dict[str, Any]]]) -> None:
    """Flag held-out targets never seen in any training interaction (cold-start items)."""
    known = {r["item"] for r in splits["train"]}
    for name, rows in splits.items():
        if name != "train":
            for row in rows:
                row["cold"] = row["item"] not in known
