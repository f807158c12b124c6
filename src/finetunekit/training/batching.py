"""Batch samplers: length-grouped batches and best-fit-decreasing packing.

Both are deterministic functions of (seed, epoch), which is what makes mid-epoch resume exact:
the batches of an epoch can be rebuilt and the first N skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def padded_size(batch: list, lengths: Sequence[int]) -> int:
    """Tokens a batch occupies once padded: rows x longest row (a row is one example's index, or
    a packed row's list of indices)."""
    if batch and isinstance(batch[0], list):
        return len(batch) * max(sum(lengths[i] for i in row) for row in batch)
    return len(batch) * max(lengths[i] for i in batch)


def heaviest_first(batches: list, lengths: Sequence[int]) -> list:
    """The batches, with the costliest one (the largest `padded_size`) moved to the front.

    As in Hugging Face's LengthGroupedSampler: a batch too big for the device fails in the first
    step, not hours into the run, and memory grows to its peak once, at the start. Swapping two
    batches keeps the order a deterministic function of (seed, epoch), which exact resume
    relies on.
    """
    if len(batches) > 1:
        top = max(range(len(batches)), key=lambda i: padded_size(batches[i], lengths))
        batches[0], batches[top] = batches[top], batches[0]
    return batches


class EpochBatchSampler:
    """Yields lists of example indices; `set_epoch` picks the epoch's deterministic order.

    With `group_by_length`, examples are shuffled, cut into mega-batches of 50 batches, sorted by
    length inside each, and the batches shuffled again: padding drops sharply while batches stay
    random across the epoch (the scheme of Hugging Face's LengthGroupedSampler); the batch of
    the longest padded size goes first (`heaviest_first`). Without `shuffle`, every epoch is the
    examples in their given order, ungrouped (the Trainer's "sequential").
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        group_by_length: bool = True,
        drop_last: bool = False,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        order = _permutation(n, self.seed, self.epoch) if self.shuffle else list(range(n))
        grouping = self.group_by_length and self.shuffle
        if grouping:
            mega = self.batch_size * 50
            grouped: list[int] = []
            for start in range(0, n, mega):
                chunk = order[start : start + mega]
                grouped.extend(sorted(chunk, key=lambda i: -self.lengths[i]))
            order = grouped
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if grouping and len(batches) > 1:
            perm = _permutation(len(batches), self.seed + 1, self.epoch)
            batches = heaviest_first([batches[i] for i in perm], self.lengths)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def pack_best_fit(lengths: Sequence[int], capacity: int, order: Sequence[int]) -> list[list[int]]:
    """Best-fit-decreasing bin packing of whole examples into rows of at most `capacity` tokens.

    Longest first, each example goes into the open row with the least room left that still fits
    it; an example longer than `capacity` gets a row of its own (it was truncated at encoding).
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(order, key=lambda i: -lengths[i]):
        size = min(lengths[index], capacity)
        best, best_room = -1, capacity + 1
        for b, free in enumerate(room):
            if size <= free < best_room:
                best, best_room = b, free
        if best < 0:
            bins.append([index])
            room.append(capacity - size)
        else:
            bins[best].append(index)
            room[best] -= size
    return bins


class PackedBatchSampler:
    """Yields batches of packed rows: each batch is a list of rows, each row a list of indices;
    the batch of the longest padded size goes first (`heaviest_first`)."""

    def __init__(
        self, lengths: Sequence[int], capacity: int, rows_per_batch: int, seed: int
    ) -> None:
        self.lengths = list(lengths)
        self.capacity = capacity
        self.rows_per_batch = rows_per_batch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[list[int]]]:
        order = _permutation(len(self.lengths), self.seed, self.epoch)
        rows = pack_best_fit(self.lengths, self.capacity, order)
        perm = _permutation(len(rows), self.seed + 1, self.epoch)
        rows = [rows[i] for i in perm]
        batches = [rows[i : i + self.rows_per_batch]
                   for i in range(0, len(rows), self.rows_per_batch)]
        return heaviest_first(batches, self.lengths)

    def __iter__(self) -> Iterator[list[list[int]]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
