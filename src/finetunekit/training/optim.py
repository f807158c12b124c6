"""Optimizer and learning-rate schedule.

Weight decay is not applied to biases and normalization weights (any tensor with fewer than two
dimensions): decaying them only hurts, and every serious recipe excludes them.
"""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from ..config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             fused=_can_fuse(decay + no_decay) or None)


def _can_fuse(params: list[torch.nn.Parameter]) -> bool:
    """Fused AdamW (one kernel per tensor, CPU and CUDA) when every tensor allows it.

    It is also what the HF Trainer uses by default. On CPU it skips the `foreach` path's
    parameter-sized temporaries (a small saving in the text bench's peak, within its noise)."""
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices <= {"cpu", "cuda"}
            and all(p.is_floating_point() for p in params))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """The schedule, with `ceil(warmup_ratio x total_steps)` warm-up steps: the rounding of the
    HF Trainer (and so TRL), so a recipe moved over from them gets the same warm-up to the step."""
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[
        cfg.scheduler
    ]
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=max(1, total_steps)
    )
