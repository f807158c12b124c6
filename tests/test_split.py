"""Seeded stratified splits: deterministic, disjoint, every label represented."""

from __future__ import annotations

from collections import Counter

from finetunekit.data.split import stratified_split


def rows(n: int) -> list[dict]:
    return [{"id": i, "label": "rare" if i % 10 == 0 else "common"} for i in range(n)]


def test_same_seed_same_split() -> None:
    a = stratified_split(rows(200), 0.2, seed=5, key=lambda r: r["label"])
    b = stratified_split(rows(200), 0.2, seed=5, key=lambda r: r["label"])
    c = stratified_split(rows(200), 0.2, seed=6, key=lambda r: r["label"])
    assert a == b
    assert a[1] != c[1]


def test_disjoint_complete_and_stratified() -> None:
    kept, held = stratified_split(rows(200), 0.2, seed=1, key=lambda r: r["label"])
    ids_kept, ids_held = {r["id"] for r in kept}, {r["id"] for r in held}
    assert not ids_kept & ids_held and len(ids_kept | ids_held) == 200
    assert Counter(r["label"] for r in held) == {"common": 36, "rare": 4}


def test_tiny_strata_keep_a_training_example() -> None:
    data = [{"id": 0, "label": "a"}, {"id": 1, "label": "b"}, {"id": 2, "label": "b"}]
    kept, held = stratified_split(data, 0.5, seed=0, key=lambda r: r["label"])
    assert {r["label"] for r in kept} == {"a", "b"}
    assert len(held) == 1
