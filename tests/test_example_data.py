"""Checks on the committed example data sets and on the scripts that produce them.

Why: examples and tests rely on these files having fixed shapes (row counts, columns, labels,
consistent ids). If someone re-runs a ``scripts/make_*.py`` against a changed upstream package,
these tests say what moved. The script tests use tiny synthetic inputs, so no Debian package
or network is needed.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import make_food_reviews  # noqa: E402
import make_movielens  # noqa: E402
import r_lazyload  # noqa: E402

FOOD = ROOT / "examples" / "data" / "food-reviews"
MOVIELENS = ROOT / "examples" / "data" / "movielens"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def food() -> dict[str, list[dict]]:
    return {split: read_jsonl(FOOD / f"{split}.jsonl") for split in ("train", "test")}


@pytest.fixture(scope="module")
def movielens() -> dict[str, pd.DataFrame]:
    return {
        name: pq.read_table(MOVIELENS / f"{name}.parquet").to_pandas()
        for name in ("ratings", "movies")
    }


# --- committed food reviews -------------------------------------------------------------------


def test_food_reviews_rows_and_fields(food: dict[str, list[dict]]) -> None:
    assert {k: len(v) for k, v in food.items()} == {"train": 4000, "test": 1000}
    for rows in food.values():
        for row in rows:
            assert list(row) == ["product", "review", "score"]
            assert all(isinstance(v, str) for v in row.values())
            assert row["review"].strip() == row["review"] != ""
            assert row["product"]


def test_food_reviews_labels(food: dict[str, list[dict]]) -> None:
    for rows in food.values():
        assert {r["score"] for r in rows} == {"great", "other"}
    assert sum(r["score"] == "great" for r in food["train"]) == 2600
    assert sum(r["score"] == "great" for r in food["test"]) == 658


def test_food_reviews_provenance() -> None:
    text = (FOOD / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "r-cran-modeldata" in text and "MIT" in text and "snap.stanford.edu" in text


# --- committed MovieLens ----------------------------------------------------------------------


def test_movielens_schema() -> None:
    ratings = pq.read_schema(MOVIELENS / "ratings.parquet")
    movies = pq.read_schema(MOVIELENS / "movies.parquet")
    assert [(f.name, str(f.type)) for f in ratings] == [
        ("userId", "int64"),
        ("movieId", "int64"),
        ("rating", "float"),  # float32
        ("timestamp", "int64"),
    ]
    assert [(f.name, str(f.type)) for f in movies] == [
        ("movieId", "int64"),
        ("title", "string"),
        ("year", "int64"),
        ("genres", "string"),
    ]


def test_movielens_counts_and_ids(movielens: dict[str, pd.DataFrame]) -> None:
    ratings, movies = movielens["ratings"], movielens["movies"]
    assert len(ratings) == 100_004
    assert ratings["userId"].nunique() == 671
    assert len(movies) == movies["movieId"].nunique() == 9_066
    assert set(ratings["movieId"]) <= set(movies["movieId"])
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert not ratings.isna().any().any()


def test_movielens_values(movielens: dict[str, pd.DataFrame]) -> None:
    ratings, movies = movielens["ratings"], movielens["movies"]
    assert ratings["rating"].between(0.5, 5.0).all()
    assert ((ratings["rating"] * 2) % 1 == 0).all()  # half stars
    assert (ratings["timestamp"] > 0).all()
    assert movies["genres"].notna().all() and (movies["genres"] != "").all()
    years = movies["year"].dropna()
    assert years.between(1900, 2017).all()
    assert movies["title"].isna().sum() <= 5  # NA in dslabs itself, see PROVENANCE.md


def test_movielens_provenance() -> None:
    text = (MOVIELENS / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "r-cran-dslabs" in text and "Harper" in text and "GroupLens" in text


# --- script transforms on synthetic data ------------------------------------------------------


def test_clean_reviews_strips_and_keeps_order() -> None:
    raw = pd.DataFrame(
        {
            "product": [" B1", "B2 "],
            "review": ["  tasty<br />snack \n", "meh"],
            "score": pd.Categorical(["great", "other"]),
            "extra": [1, 2],
        },
        index=[1, 2],  # R row names
    )
    out = make_food_reviews.clean_reviews(raw)
    assert out.to_dict("records") == [
        {"product": "B1", "review": "tasty<br />snack", "score": "great"},
        {"product": "B2", "review": "meh", "score": "other"},
    ]


@pytest.mark.parametrize(
    "review, score, message",
    [("  ", "great", "empty"), ("ok", "bad", "labels")],
)
def test_clean_reviews_rejects_bad_rows(review: str, score: str, message: str) -> None:
    raw = pd.DataFrame({"product": ["B1"], "review": [review], "score": [score]})
    with pytest.raises(ValueError, match=message):
        make_food_reviews.clean_reviews(raw)


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    df = pd.DataFrame({"product": ["B1"], "review": ['caf\u00e9 \ufffd "q"'], "score": ["great"]})
    path = tmp_path / "x.jsonl"
    make_food_reviews.write_jsonl(df, path)
    assert "café" in path.read_text(encoding="utf-8")  # not ASCII-escaped
    assert read_jsonl(path) == df.to_dict("records")


def test_split_movielens() -> None:
    raw = pd.DataFrame(
        {
            "movieId": pd.array([20, 10, 20], dtype="Int32"),
            "title": pd.array(["B ", "A", "B "], dtype="string"),
            "year": pd.array([2001, None, 2001], dtype="Int32"),
            "genres": pd.Categorical(["Drama", "(no genres listed)", "Drama"]),
            "userId": pd.array([1, 1, 2], dtype="Int32"),
            "rating": [4.5, 3.0, 0.5],
            "timestamp": pd.array([100, 101, 102], dtype="Int32"),
        },
        index=[1, 2, 3],
    )
    ratings, movies = make_movielens.split_movielens(raw)
    assert ratings.to_dict("list") == {
        "userId": [1, 1, 2],
        "movieId": [20, 10, 20],
        "rating": [4.5, 3.0, 0.5],
        "timestamp": [100, 101, 102],
    }
    assert ratings.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    assert movies["movieId"].tolist() == [10, 20]
    assert movies["title"].tolist() == ["A", "B"]
    assert movies["year"].isna().tolist() == [True, False] and movies["year"].iloc[1] == 2001
    assert movies["genres"].tolist() == ["(no genres listed)", "Drama"]


def test_split_movielens_rejects_conflicting_movie_rows() -> None:
    raw = pd.DataFrame(
        {
            "movieId": [1, 1],
            "title": ["A", "Not A"],
            "year": [2000, 2000],
            "genres": ["Drama", "Drama"],
            "userId": [1, 2],
            "rating": [1.0, 2.0],
            "timestamp": [1, 2],
        }
    )
    with pytest.raises(ValueError, match="conflicting"):
        make_movielens.split_movielens(raw)


def test_write_parquet_schema(tmp_path: Path) -> None:
    ratings = pd.DataFrame(
        {"userId": [1], "movieId": [2], "rating": np.float32([4.0]), "timestamp": [3]}
    )
    path = tmp_path / "r.parquet"
    make_movielens.write_parquet(ratings, make_movielens.RATINGS_SCHEMA, path)
    assert pq.read_schema(path).equals(make_movielens.RATINGS_SCHEMA)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


# --- the R lazy-load reader on a synthetic database -------------------------------------------


def _chunk(payload: bytes, kind: bytes) -> bytes:
    """Compress ``payload`` the way R's lazy-load writer does for type ``kind``."""
    head = struct.pack(">I", len(payload))
    if kind == b"Z":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
        return head + kind + lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)
    if kind == b"2":
        return head + kind + bz2.compress(payload)
    if kind == b"1":
        return head + kind + zlib.compress(payload)
    if kind == b"0":
        return head + kind + payload
    return head + zlib.compress(payload)  # old format: no type byte


@pytest.mark.parametrize("kind", [b"Z", b"2", b"1", b"0", b""])
def test_decompress_chunk(kind: bytes) -> None:
    payload = b"X\n" + bytes(range(256)) * 10
    assert r_lazyload.decompress_chunk(_chunk(payload, kind)) == payload


def test_read_lazyload_object_round_trip(tmp_path: Path) -> None:
    rdata = pytest.importorskip("rdata")
    from rdata.conversion import convert_python_to_r_data
    from rdata.unparser import unparse_data

    frames = {
        "first": pd.DataFrame({"n": np.int32([1, 2]), "s": pd.Series(["a", "b"], dtype=object)}),
        "second": pd.DataFrame({"f": pd.Categorical(["great", "other", "great"])}),
    }
    blob, variables = b"", {}
    for (name, df), kind in zip(frames.items(), (b"Z", b"2"), strict=True):
        chunk = _chunk(unparse_data(convert_python_to_r_data(df)), kind)
        variables[name] = np.int32([len(blob), len(chunk)])
        blob += chunk
    index = {"variables": variables, "references": {}, "compressed": True}
    rdx, rdb = tmp_path / "Rdata.rdx", tmp_path / "Rdata.rdb"
    rdx.write_bytes(gzip.compress(unparse_data(convert_python_to_r_data(index))))
    rdb.write_bytes(blob)

    assert r_lazyload.list_objects(rdx) == ["first", "second"]
    first = r_lazyload.read_lazyload_object(rdx, rdb, "first")
    assert first["n"].tolist() == [1, 2] and first["s"].tolist() == ["a", "b"]
    second = r_lazyload.read_lazyload_object(rdx, rdb, "second")
    assert second["f"].astype(str).tolist() == ["great", "other", "great"]
    with pytest.raises(KeyError, match="missing"):
        r_lazyload.read_lazyload_object(rdx, rdb, "missing")
    assert rdata  # imported only to skip cleanly where rdata is absent


# --- committed answer-match pairs -------------------------------------------------------------


def test_answer_match_pairs_regenerate_and_keep_test_questions_out(tmp_path: Path) -> None:
    import subprocess

    folder = ROOT / "examples" / "data" / "answer-match"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_answer_match.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    rows = {}
    for split in ("train", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (folder / f"{split}.jsonl").read_bytes()
        rows[split] = read_jsonl(folder / f"{split}.jsonl")
        labels = [r["label"] for r in rows[split]]
        assert labels.count("match") == labels.count("mismatch") == len(labels) // 2
        assert all(list(r) == ["question", "answer", "label"] for r in rows[split])
    assert {len(v) for v in rows.values()} == {1832, 202}
    assert not {r["question"] for r in rows["test"]} & {r["question"] for r in rows["train"]}
    matched = {(r["question"], r["answer"]) for s in rows.values() for r in s
               if r["label"] == "match"}
    assert not any((r["question"], r["answer"]) in matched for s in rows.values() for r in s
                   if r["label"] == "mismatch")
    assert "chatterbot-corpus" in (folder / "PROVENANCE.md").read_text(encoding="utf-8")
