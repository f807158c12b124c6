"""Ranking metrics for next-item recommendation: HR@K, NDCG@K, MRR and catalogue coverage.

Each evaluated user has exactly one held-out target item (leave-last-out or the first item after
a time cut), so HR@K is the share of users whose target is in their top K, NDCG@K is
1 / log2(rank + 1) for a hit (the ideal DCG of one relevant item is 1), and MRR is the mean of
1 / rank over the full ranking (not truncated at K). Items the user already interacted with in
training are removed from the ranking before it is scored: recommending them again is neither a
hit nor a miss, and leaving them in would reward a model for remembering the past.

Ties are broken by catalogue position (a stable sort), the same way for the rank of the target
and for the top-K list, so a constant scorer cannot score by luck of ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .significance import RowScores, paired_changes


def mask_seen(scores: torch.Tensor, seen: Sequence[Sequence[int]], targets: Sequence[int]) -> None:
    """Set each user's already-seen items to -inf in place (never the target itself)."""
    for row, (items, target) in enumerate(zip(seen, targets, strict=True)):
        if items:
            index = torch.as_tensor([i for i in items if i != target], dtype=torch.long)
            scores[row, index] = -math.inf


def ranks_and_top(scores: torch.Tensor, targets: Sequence[int], k: int) -> tuple[list[int], list[list[int]]]:
    """1-based rank of each target and each row's top-k item indices (ties: lower index first)."""
    target_index = torch.as_tensor(list(targets), dtype=torch.long)
    target_score = scores.gather(1, target_index[:, None])
    positions = torch.arange(scores.shape[1])[None, :]
    ahead = (scores > target_score) | ((scores == target_score) & (positions < target_index[:, None]))
    ranks = (ahead.sum(1) + 1).tolist()
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k].tolist()
    return ranks, top


def ranking_metrics(
    ranks: Sequence[int], top: Sequence[Sequence[int]], catalogue_size: int, k: int, prefix: str = ""
) -> dict[str, float]:
    """HR@k, NDCG@k, MRR and coverage@k (share of the catalogue in anyone's top k)."""
    n = max(len(ranks), 1)
    hits = [r for r in ranks if r <= k]
    shown = {item for row in top for item in row[:k]}
    return {
        f"{prefix}hr@{k}": len(hits) / n,
        f"{prefix}ndcg@{k}": sum(1.0 / math.log2(r + 1) for r in hits) / n,
        f"{prefix}mrr": sum(1.0 / r for r in ranks) / n,
        f"{prefix}coverage@{k}": len(shown) / max(catalogue_size, 1),
    }


def score_and_rank(
    scores: torch.Tensor,
    targets: Sequence[int],
    seen: Sequence[Sequence[int]],
    k: int,
    prefix: str = "",
) -> tuple[dict[str, float], list[int], list[list[int]]]:
    """Mask seen items, rank, and compute the metrics; returns metrics, ranks and top-k lists."""
    scores = scores.float().clone()
    mask_seen(scores, seen, targets)
    ranks, top = ranks_and_top(scores, targets, k)
    return ranking_metrics(ranks, top, scores.shape[1], k, prefix), ranks, top


def rank_scores(rows: list[str], ranks: Sequence[int], k: int) -> RowScores:
    """Each user's HR@k, NDCG@k and reciprocal rank (the metrics are their means)."""
    scores = RowScores(rows)
    scores.add_mean(f"hr@{k}", [float(r <= k) for r in ranks])
    scores.add_mean(f"ndcg@{k}", [1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
    scores.add_mean("mrr", [1.0 / r for r in ranks])
    return scores


def paired_gain(ranks: Sequence[int], baseline_ranks: Sequence[int], k: int) -> dict[str, float]:
    """NDCG@k of a model minus a baseline's on the same users, with a 95% paired bootstrap
    interval: whether a margin is clear or within the noise of a few hundred users."""
    users = [str(i) for i in range(len(ranks))]
    change = paired_changes(rank_scores(users, baseline_ranks, k),
                            rank_scores(users, ranks, k)).get(f"ndcg@{k}")
    if change is None:
        return {"users": 0}
    return {f"ndcg@{k}_gain": change["change"], "ci95_low": change["low"],
            "ci95_high": change["high"], "users": len(users)}
