"""The training loop: one function, read top to bottom.

It sees a model, a batch sampler, a collate function and a loss; nothing task-specific. Each
optimizer step gathers `grad_accum` micro-batches first and divides every micro-batch's summed
loss by the number of loss items (examples or trained tokens) in the whole window, so padding,
packing and accumulation never change what is optimized.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import UserError
from ..fileio import atomic_dir, atomic_write_json
from .checkpoint import (
    checkpoint_state,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    prune_checkpoints,
    save_checkpoint,
    weights_to_save,
)
from .metrics_log import MetricsLog

LossFn = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]
EvalFn = Callable[[torch.nn.Module], dict[str, float]]


class Interrupted(Exception):
    """Training stopped on SIGTERM / Ctrl-C after writing a checkpoint."""


class Diverged(UserError):
    """Too many non-finite steps in a row; the last good checkpoint is kept."""


@dataclass
class TrainData:
    """The encoded training examples, how to batch them, and how to turn a batch into tensors."""

    examples: Sequence[Any]
    sampler: Any  # EpochBatchSampler or PackedBatchSampler: set_epoch(), batches(), __len__
    collate: Callable[[list[Any]], dict[str, Any]]  # must set batch["num_items"] and "_where"


@dataclass
class Objective:
    """Which evaluation metric picks the best checkpoint, and in which direction."""

    metric: str
    mode: str  # "max" or "min"
    patience: int | None
    min_delta: float = 0.0

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta


@dataclass
class LoopResult:
    steps: int
    epochs_done: float
    best_metric: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    skipped_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def micro_batch(data: TrainData, index_groups: list, device: torch.device, rank: int = 0,
                world: int = 1) -> dict[str, Any]:
    """Collate one micro-batch onto `device`; with several processes each takes its slice."""
    mine = index_groups[rank::world] if world > 1 else index_groups
    if mine and isinstance(mine[0], list):  # packed rows: lists of example indices
        batch = data.collate([[data.examples[i] for i in row] for row in mine])
    else:
        batch = data.collate([data.examples[i] for i in mine])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _StopFlag:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.raised: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_loop(
    model: torch.nn.Module,
    data: TrainData,
    loss_fn: LossFn,
    cfg: TrainConfig,
    accelerator: Accelerator,
    checkpoint_dir: Path,
    metrics: MetricsLog,
    evaluate_fn: EvalFn | None = None,
    objective: Objective | None = None,
    trainable_only: bool = False,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch: Callable[[torch.nn.Module, int], None] | None = None,
) -> LoopResult:
    """Train `model` in place; at the end it holds the best evaluated weights (if any)."""
    from .optim import build_optimizer, build_scheduler

    rank, world = accelerator.process_index, accelerator.num_processes
    micro_per_epoch = len(data.sampler)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)  # plain keys
    params = [p for p in model.parameters() if p.requires_grad]

    state: dict[str, Any] = {
        "step": 0, "epoch": 0, "micro": 0, "best_metric": None, "best_step": None,
        "evals_without_improvement": 0, "skipped_steps": 0, "bad_in_row": 0,
        "fingerprint": fingerprint or {}, "history": [],
    }
    existing = list_checkpoints(checkpoint_dir)
    if resume and existing:
        step, folder = existing[-1]
        saved = checkpoint_state(folder)
        _refuse_changed(saved.get("fingerprint", {}), fingerprint or {}, folder)
        load_checkpoint(folder, raw_model, optimizer, scheduler, accelerator.scaler)
        state.update(saved)
        metrics.truncate_after(state["step"])
        accelerator.print(f"resumed from {folder} (step {step}, epoch {state['epoch']})")
    else:
        set_seed(cfg.seed)  # dropout and any other randomness start from the seed

    def checkpoint() -> None:
        if accelerator.is_main_process:
            save_checkpoint(
                checkpoint_dir / f"step-{state['step']}", raw_model, optimizer, scheduler,
                state, trainable_only, accelerator.scaler,
            )
            prune_checkpoints(checkpoint_dir, cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    def evaluate() -> bool:
        """Evaluate, keep the best weights; returns True when early stopping should stop."""
        if evaluate_fn is None or objective is None:
            return False
        model.eval()
        with torch.no_grad():
            scores = evaluate_fn(raw_model)
        model.train()
        value = scores[objective.metric]
        record = {"step": state["step"], "epoch": _epoch_float(state, micro_per_epoch)}
        record.update({f"eval_{k}": v for k, v in scores.items()})
        metrics.write(record)
        state["history"].append(record)
        if objective.better(value, state["best_metric"]):
            state["best_metric"], state["best_step"] = value, state["step"]
            state["evals_without_improvement"] = 0
            if accelerator.is_main_process:
                with atomic_dir(checkpoint_dir / "best") as tmp:
                    save_file(weights_to_save(raw_model, trainable_only), str(tmp / "model.safetensors"))
                    atomic_write_json(tmp / "state.json", {"step": state["step"], objective.metric: value})
            accelerator.wait_for_everyone()
            return False
        state["evals_without_improvement"] += 1
        return objective.patience is not None and state["evals_without_improvement"] >= objective.patience

    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step",
               disable=not progress or not accelerator.is_main_process, dynamic_ncols=True)
    window_loss, window_items, window_examples, window_tokens = 0.0, 0.0, 0, 0
    window_start = time.perf_counter()
    stopped_early = False
    model.train()
    with _StopFlag() as stop:
        while state["step"] < total_steps and not stopped_early:
            data.sampler.set_epoch(state["epoch"])
            if on_epoch is not None:  # e.g. unfreeze a backbone; also runs on resume
                on_epoch(raw_model, state["epoch"])
            batches = data.sampler.batches()
            while state["micro"] < len(batches) and state["step"] < total_steps:
                window = batches[state["micro"] : state["micro"] + cfg.grad_accum]
                micro = [micro_batch(data, b, accelerator.device, rank, world) for b in window]
                items = torch.tensor(float(sum(b["num_items"] for b in micro)), device=accelerator.device)
                total_items = accelerator.reduce(items, reduction="sum").item() if world > 1 else items.item()
                step_loss = 0.0
                for i, batch in enumerate(micro):
                    sync = accelerator.no_sync(model) if i < len(micro) - 1 else nullcontext()
                    with sync, accelerator.autocast():
                        loss_sum = loss_fn(model, batch)
                    accelerator.backward(loss_sum * world / max(total_items, 1.0))
                    step_loss += float(loss_sum.detach())
                if world > 1:  # every rank logs the global loss and skips bad steps together
                    step_loss = accelerator.reduce(
                        torch.tensor(step_loss, device=accelerator.device), reduction="sum"
                    ).item()
                grad_norm = _clip(accelerator, params, cfg.max_grad_norm)
                if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                    optimizer.zero_grad(set_to_none=True)
                    state["skipped_steps"] += 1
                    state["bad_in_row"] += 1
                    rows = [w for b in micro for w in b.get("_where", [])]
                    accelerator.print(f"non-finite loss or gradient at step {state['step'] + 1}: "
                                      f"step skipped (rows {', '.join(rows[:8])})")
                    if state["bad_in_row"] >= cfg.max_bad_steps:
                        raise Diverged(
                            f"training diverged: {state['bad_in_row']} steps in a row had a "
                            f"non-finite loss or gradient (last batch rows: {', '.join(rows[:8])}); "
                            f"the last good checkpoint is kept in {checkpoint_dir}"
                        )
                else:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["bad_in_row"] = 0
                    window_loss += step_loss
                    window_items += total_items
                    window_examples += sum(len(b.get("_where", [])) for b in micro)
                    window_tokens += sum(int(b.get("num_tokens", 0)) for b in micro)
                state["micro"] += len(window)
                state["step"] += 1
                bar.update(1)

                if state["step"] % cfg.log_every == 0 or state["step"] == total_steps:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    record = {
                        "step": state["step"],
                        "epoch": round(_epoch_float(state, micro_per_epoch), 4),
                        "loss": window_loss / max(window_items, 1.0),
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "examples_per_s": window_examples * world / elapsed,
                    }
                    if window_tokens:
                        record["tokens_per_s"] = window_tokens * world / elapsed
                    metrics.write(record)
                    postfix = {"loss": f"{record['loss']:.4f}", "ex_s": f"{record['examples_per_s']:.1f}"}
                    if "tokens_per_s" in record:  # token tasks (chat, speech): tokens/s too
                        postfix["tok_s"] = f"{record['tokens_per_s']:.0f}"
                    bar.set_postfix(postfix)
                    window_loss, window_items, window_examples, window_tokens = 0.0, 0.0, 0, 0
                    window_start = time.perf_counter()

                epoch_end = state["micro"] >= len(batches)
                if epoch_end:
                    state["epoch"] += 1
                    state["micro"] = 0
                if cfg.eval_every is not None:
                    due_eval = state["step"] % cfg.eval_every == 0
                else:
                    due_eval = epoch_end
                if due_eval or (state["step"] == total_steps and state["best_step"] != state["step"]):
                    stopped_early = evaluate()
                if cfg.checkpoint_every is not None:
                    due_ckpt = state["step"] % cfg.checkpoint_every == 0
                else:
                    due_ckpt = epoch_end
                if due_ckpt or stop.raised or stopped_early or state["step"] == total_steps:
                    checkpoint()
                if stop.raised:
                    bar.close()
                    raise Interrupted(
                        f"stopped by {stop.raised} at step {state['step']}; checkpoint written, "
                        "continue with --resume"
                    )
                if stopped_early or epoch_end:
                    break
    bar.close()

    best_file = checkpoint_dir / "best" / "model.safetensors"
    if state["best_step"] is not None and best_file.is_file():
        load_weights(raw_model, best_file)
    return LoopResult(
        steps=state["step"],
        epochs_done=_epoch_float(state, micro_per_epoch),
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        stopped_early=stopped_early,
        skipped_steps=state["skipped_steps"],
        history=state["history"],
    )


def _epoch_float(state: dict[str, Any], micro_per_epoch: int) -> float:
    return state["epoch"] + state["micro"] / max(1, micro_per_epoch)


def _clip(accelerator: Accelerator, params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip (when asked) and return the global gradient norm, which the loss guard also checks."""
    if max_norm is not None:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def _refuse_changed(saved: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    """Resuming with a different model, data or batch shape would silently train something else."""
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise UserError(
            f"cannot resume from {folder}: the config changed in a way that breaks resume ({diffs}); "
            "use a new output folder or restore those settings"
        )
