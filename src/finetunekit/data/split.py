"""Seeded, stratified train / validation / test splits.

The same seed and data always give the same split, whatever the machine, so a resumed or repeated
run sees exactly the same examples. Stratifying keeps rare labels in every split.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any


def stratified_split(
    rows: list[dict[str, Any]],
    fraction: float,
    seed: int,
    key: Callable[[dict[str, Any]], Hashable] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split off `fraction` of rows (per stratum when `key` is given); original order is kept."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[key(row) if key else None].append(index)
    rng = random.Random(seed)
    held: set[int] = set()
    for stratum in sorted(groups, key=repr):
        indices = groups[stratum][:]
        rng.shuffle(indices)
        count = round(len(indices) * fraction)
        if len(indices) > 1:
            count = min(max(count, 1), len(indices) - 1)
        else:
            count = 0
        held.update(indices[:count])
    kept = [r for i, r in enumerate(rows) if i not in held]
    split_off = [r for i, r in enumerate(rows) if i in held]
    return kept, split_off
