"""Recommendation data: checks name file, line and field; splits by time never leak the future."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetunekit import config as config_mod
from finetunekit.data.interactions import leave_last_out, parse_time, time_cut
from finetunekit.data.readers import RowError
from finetunekit.errors import UserError
from finetunekit.run import read_splits
from finetunekit.tasks import get_task

BAD = Path(__file__).parent / "data" / "bad" / "recommendation"
MOVIELENS = Path(__file__).parents[1] / "examples" / "data" / "movielens"
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}


def make_cfg(train: str, items: str = "items.csv", base: Path = BAD, **data: object):
    raw = {"task": "recommendation", "model": "unused",
           "data": {"train": train, "items": items, "columns": COLUMNS, **data}}
    return config_mod.validate(raw, base_dir=str(base))


def splits_of(cfg):
    task = get_task(cfg)
    return read_splits(cfg, task)[0], task


def test_good_file_leave_last_out():
    splits, task = splits_of(make_cfg("good.csv"))
    assert {r["user"]: r["item"] for r in splits["test"]} == {"1": "5", "2": "8", "3": "2"}
    assert {r["user"]: r["item"] for r in splits["validation"]} == {"1": "4", "2": "6", "3": "1"}
    assert sorted((r["user"], r["item"]) for r in splits["train"]) == [
        ("1", "1"), ("1", "2"), ("1", "3"), ("2", "3"), ("2", "4"), ("3", "7")]
    test = {r["user"]: r for r in splits["test"]}
    # the test row's history holds the validation item (the past at test time), not the target
    assert test["1"]["history"] == ["1", "2", "4"] and test["1"]["seen"] == ["1", "2", "3", "4"]
    # cold-start: never in any training interaction
    assert {u: r["cold"] for u, r in test.items()} == {"1": True, "2": True, "3": False}
    assert task.users["1"] == {"history": ["1", "2", "4", "5"], "seen": ["1", "2", "3", "4", "5"]}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("unknown_item.csv", "unknown_item.csv:4: field 'movieId': unknown item id '99'"),
        ("duplicate.csv", "duplicate.csv:5: field 'movieId': duplicate interaction: user '1' "
                          "and item '2' already at line 3"),
        ("short_history.csv", "short_history.csv:5: field 'userId': user '2' has 2 positive"),
        ("bad_timestamp.csv", "bad_timestamp.csv:3: field 'timestamp': expected Unix seconds or "
                              "an ISO 8601 date, got 'last tuesday'"),
        ("missing_timestamp.jsonl", "missing_timestamp.jsonl:2: field 'timestamp': missing"),
        ("bad_rating.csv", "bad_rating.csv:2: field 'rating': expected a number, got 'five'"),
    ],
)
def test_bad_interactions_name_file_line_field(file: str, expected: str):
    with pytest.raises(UserError) as err:
        splits_of(make_cfg(file))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_item_table():
    with pytest.raises(UserError, match=r"items_duplicate_id.csv:4: field 'movieId': duplicate "
                                        r"item id '1' \(first at line 2\)"):
        splits_of(make_cfg("good.csv", items="items_duplicate_id.csv"))
    with pytest.raises(UserError, match="data.items: recommendation needs an item table"):
        splits_of(make_cfg("good.csv", items=None))


def test_skip_bad_rows_reports_instead():
    cfg = make_cfg("short_history.csv", skip_bad_rows=True)
    task = get_task(cfg)
    splits, tables = read_splits(cfg, task)
    assert {r["user"] for r in splits["train"]} == {"1"}
    assert [b.where for b in tables[0].bad_rows] == ["short_history.csv:5"]


def test_parse_time_formats():
    assert parse_time(5) == 5.0 and parse_time("7.5") == 7.5
    assert parse_time("1970-01-02T00:00:00Z") == 86400.0
    assert parse_time("1970-01-02") == 86400.0
    for bad in (None, "", "soon", float("nan")):
        with pytest.raises(RowError):
            parse_time(bad)


def _rows_from_movielens(max_rows: int):
    cfg = make_cfg("ratings.parquet", items="movies.parquet", base=MOVIELENS,
                   max_rows=max_rows, skip_bad_rows=True)
    return splits_of(cfg)


def _assert_no_leak(splits):
    latest = {}
    for r in splits["train"]:
        latest[r["user"]] = max(latest.get(r["user"], -1.0), r["time"])
    train_pairs = {(r["user"], r["item"]) for r in splits["train"]}
    for name in ("validation", "test"):
        for row in splits.get(name, []):
            assert row["time"] >= latest[row["user"]], (name, row["user"])
            assert (row["user"], row["item"]) not in train_pairs
            assert row["item"] not in row["seen"]
    if "validation" in splits:
        val = {r["user"]: r["time"] for r in splits["validation"]}
        assert all(r["time"] >= val[r["user"]] for r in splits["test"] if r["user"] in val)


def test_leave_last_out_never_leaks_on_movielens():
    """MovieLens rows are sorted by user and movie, not time: the split must sort by time."""
    splits, _ = _rows_from_movielens(6000)
    assert len(splits["test"]) >= 25
    _assert_no_leak(splits)
    # the test target is the user's latest positive interaction
    by_user = {}
    for r in splits["train"]:
        by_user.setdefault(r["user"], []).append(r)
    for row in splits["test"]:
        assert row["time"] == max([row["time"]] + [r["time"] for r in by_user[row["user"]]])


def test_time_cut_never_leaks():
    rows = [{"user": str(u), "item": str(i), "time": float(10 * i + u), "positive": i % 3 != 1,
             "_where": f"f:{u}-{i}"} for u in range(5) for i in range(20)]
    splits = time_cut(rows, validation=0.1, test=0.2)
    cut = min(r["time"] for r in splits["test"])
    assert max(r["time"] for r in splits["train"]) < cut
    _assert_no_leak(splits)
    assert len(splits["test"]) == 5 and len(splits["validation"]) == 5
    assert leave_last_out(rows, validation=False).keys() == {"train", "test"}
