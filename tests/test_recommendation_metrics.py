"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from finetunekit.evaluate.ranking import ranking_metrics, score_and_rank


def test_metrics_hand_computed():
    # ranks 1, 3 and 12 with k=10: hits 2/3; ndcg (1 + 1/log2(4)) / 3 = 0.5; mrr (1+1/3+1/12)/3
    m = ranking_metrics([1, 3, 12], [[0, 1], [1, 2], [3, 4]], catalogue_size=10, k=10)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)
    assert m["coverage@10"] == pytest.approx(5 / 10)


def test_seen_items_are_excluded_and_ties_break_by_position():
    scores = torch.tensor([
        [0.9, 0.8, 0.7, 0.1, 0.0],   # target 2; item 0 was seen -> rank 2
        [0.5, 0.5, 0.5, 0.5, 0.5],   # constant scores, target 3 -> rank 4 (no luck from ties)
        [0.1, 0.2, 0.3, 0.4, 0.9],   # target 4, the seen list names the target: kept -> rank 1
    ])
    metrics, ranks, top = score_and_rank(scores, [2, 3, 4], [[0], [], [4, 3]], k=2)
    assert ranks == [2, 4, 1]
    assert top == [[1, 2], [0, 1], [4, 2]]
    assert metrics["hr@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    assert metrics["coverage@2"] == pytest.approx(4 / 5)
    assert scores[0, 0] == 0.9  # the caller's scores are not modified


def test_prefix_names():
    metrics, _, _ = score_and_rank(torch.tensor([[1.0, 0.0]]), [0], [[]], k=1, prefix="cold_")
    assert set(metrics) == {"cold_hr@1", "cold_ndcg@1", "cold_mrr", "cold_coverage@1"}
    assert metrics["cold_ndcg@1"] == 1.0


def test_paired_gain_hand_computed():
    from finetunekit.evaluate.ranking import paired_gain

    # gains: model 1, 1/2, 0, 1/log2(3); baseline 1/log2(6), 0, 0, 1/log2(3)
    gain = paired_gain([1, 3, 20, 2], [5, 30, 20, 2], k=10)
    expected = (1 - 1 / math.log2(6) + 0.5) / 4
    assert gain["ndcg@10_gain"] == pytest.approx(expected)
    assert gain["ci95_low"] <= expected <= gain["ci95_high"] and gain["users"] == 4
    same = paired_gain([1, 2, 50], [1, 2, 50], k=10)
    assert same["ndcg@10_gain"] == same["ci95_low"] == same["ci95_high"] == 0.0
