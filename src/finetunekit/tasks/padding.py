"""Padding token-id lists into batch tensors (shared by the text-based tasks)."""

from __future__ import annotations

import torch


def pad_ids(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one tensor plus its attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if side == "right":
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        else:
            ids[i, width - len(seq) :] = torch.tensor(seq)
            mask[i, width - len(seq) :] = 1
    return ids, mask
