"""`finetunekit plan CONFIG`: peak memory per device and time per epoch, before a long run.

Memory is predicted part by part, so that when a run will not fit the user sees which part to
shrink:

- runtime (CPU): the process's RSS once the model is loaded, less the weights: interpreter,
  libraries, the data read, and what loading left behind. The GPU allocator counts only tensors,
  so it is 0 there.
- weights: every parameter and buffer once (tied tensors once).
- gradients: one per trainable parameter; optimizer: AdamW's two moments per trainable parameter.
- activations: what autograd keeps for the backward pass, *measured* with saved-tensor hooks on
  one row of the longest training example, times the rows a device gets per micro-batch. So it
  counts what this model really saves (LoRA, the attention implementation, the chunked loss)
  without a formula per architecture. With gradient checkpointing the hooks do not see the layer
  inputs the checkpoints keep, so those (layers x tokens x hidden) and one layer's recomputation
  are added; selective checkpointing also keeps its matmul and attention outputs, counted op by
  op over one forward with the same policy.
- sharding: FSDP and ZeRO-3 divide weights, gradients and optimizer state by the process count
  (plus one gathered layer); ZeRO-2 divides gradients and optimizer state; DDP adds its gradient
  buckets.
- other (CPU): a short probe runs real optimizer steps on batches spread from the largest to the
  smallest; whatever peak RSS it reaches beyond the parts above is shown as its own row. On CPU
  that is mostly glibc keeping freed blocks of one batch shape that the next shape cannot reuse
  (it grows slowly over a run with varied shapes), and weights memory-mapped from safetensors
  files, which count only once touched.

Two phases peak: a training step (all of the above) and writing the final model, where
safetensors serializes a copy of the weights. The probe also gives the time: seconds per padded
token over its steps (the first not timed) times the padded tokens of an epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import config as config_mod
from .config import Config
from .memory import MB, current_mb, device_capacity_mb, on_gpu
from .training.activation_checkpointing import (
    Mode,
    is_checkpointing,
    keeps_output,
    set_activation_checkpointing,
)
from .training.batching import padded_size
from .training.loop import micro_batch


@dataclass
class MemoryParts:
    """Predicted memory per device, in MiB."""

    runtime: float
    weights: float
    gradients: float
    optimizer: float
    activations: float
    ddp_buckets: float = 0.0
    gathered_layer: float = 0.0
    other: float = 0.0
    save_copy: float = 0.0

    @property
    def train_peak(self) -> float:
        return (self.runtime + self.weights + self.gradients + self.optimizer + self.activations
                + self.ddp_buckets + self.gathered_layer + self.other)

    @property
    def save_peak(self) -> float:
        return self.runtime + self.weights + self.save_copy

    @property
    def peak(self) -> float:
        return max(self.train_peak, self.save_peak)


@dataclass
class Plan:
    config: str
    device: str
    processes: int
    strategy: str
    rows_per_device: int
    longest_example: int
    params: int
    trainable_params: int
    memory_mb: MemoryParts
    activations_per_row_mb: float
    capacity_mb: float
    steps_per_epoch: int
    seconds_per_step: float | None
    seconds_per_epoch: float | None
    suggestions: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory_mb.peak <= self.capacity_mb

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory_mb"] = {k: round(v, 1) for k, v in out["memory_mb"].items()}
        out["memory_mb"].update(train_peak=round(self.memory_mb.train_peak, 1),
                                save_peak=round(self.memory_mb.save_peak, 1),
                                peak=round(self.memory_mb.peak, 1))
        out["fits"] = self.fits
        return out


# --- the measured parts -----------------------------------------------------------------------
def _unique_storages(tensors: list[torch.Tensor]) -> dict[int, int]:
    """Storage pointer -> bytes, so tied weights and views count once."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return seen


def saved_activation_bytes(model: torch.nn.Module, loss_fn: Any, batch: dict[str, Any]) -> int:
    """Bytes autograd saves for backward in one forward + loss, weights excluded."""
    weights = _unique_storages([*model.parameters(), *model.buffers()])
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in weights and ptr != 0:
            saved[ptr] = max(saved.get(ptr, 0), storage.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, batch)
    del loss  # frees the graph and everything it saved
    return sum(saved.values())


def _layers_and_hidden(model: torch.nn.Module) -> tuple[int, int]:
    cfg = getattr(model, "config", None)
    text = getattr(cfg, "text_config", None) or cfg
    return (int(getattr(text, "num_hidden_layers", 0) or 0),
            int(getattr(text, "hidden_size", 0) or 0))


def selective_kept_bytes(model: torch.nn.Module, loss_fn: Any, batch: dict[str, Any]) -> int:
    """Bytes selective checkpointing keeps inside the checkpointed layers over one forward: the
    outputs of the ops its policy saves. Run with checkpointing off, so every op is seen."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    from transformers.modeling_layers import GradientCheckpointingLayer

    kept: list[torch.Tensor] = []  # held, so a freed output's address is not reused and missed
    inside = [0]  # depth of checkpointable layers the forward is in

    def enter(*_: Any) -> None:
        inside[0] += 1

    def leave(*_: Any) -> None:
        inside[0] -= 1

    class CountKept(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            if inside[0] and keeps_output(func, args):
                kept.extend(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    hooks = [h for m in layers for h in (m.register_forward_pre_hook(enter),
                                         m.register_forward_hook(leave))]
    model.train()
    try:
        with CountKept():
            loss = loss_fn(model, batch)
        del loss
    finally:
        for h in hooks:
            h.remove()
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}.values())


def activation_bytes_per_row(model: torch.nn.Module, loss_fn: Any, batch: dict[str, Any],
                             tokens: int, mode: Mode = True) -> int:
    """Activation memory of a one-row batch, gradient checkpointing (`mode`) accounted for."""
    if not is_checkpointing(model):
        return saved_activation_bytes(model, loss_fn, batch)
    seen_outside = saved_activation_bytes(model, loss_fn, batch)  # embeddings, head, loss
    set_activation_checkpointing(model, False)
    try:
        full = saved_activation_bytes(model, loss_fn, batch)
        kept = selective_kept_bytes(model, loss_fn, batch) if mode == "selective" else 0
    finally:
        set_activation_checkpointing(model, mode)
    layers, hidden = _layers_and_hidden(model)
    if not layers:
        return full
    kept_inputs = layers * tokens * hidden * 4  # each checkpointed layer keeps its input
    recompute = max(0, full - seen_outside) / layers  # one layer's activations at a time
    return int(seen_outside + kept_inputs + kept + recompute)


@dataclass
class Probe:
    seconds_per_step: float
    seconds_per_epoch: float
    peak_mb: float


def probe(model: torch.nn.Module, data: Any, loss_fn: Any, cfg: Config, device: torch.device,
          lengths: list[int], steps: int) -> Probe | None:
    """Time real optimizer steps on batches spread from the largest to the smallest.

    The first step is not timed. Seconds per padded token, times the padded tokens of an epoch,
    gives the epoch; mixing batch shapes also shows how much memory the allocator keeps back
    when shapes vary (freed blocks of one shape that the next cannot reuse).
    """
    from .memory import peak_mb
    from .training.optim import build_optimizer

    if steps < 2:
        return None
    optimizer = build_optimizer(model, cfg.train)
    data.sampler.set_epoch(0)
    batches = data.sampler.batches()
    accum = cfg.train.grad_accum
    windows = [batches[i: i + accum] for i in range(0, len(batches), accum)]
    size = [sum(padded_size(b, lengths) for b in w) for w in windows]
    by_size = sorted(range(len(windows)), key=size.__getitem__, reverse=True)
    picks = [by_size[0]] + [by_size[round(i * (len(by_size) - 1) / max(steps - 1, 1))]
                            for i in range(steps)]
    times, tokens = [], []
    model.train()
    for n, w in enumerate(picks[: steps + 1]):
        start = time.perf_counter()
        micro = [micro_batch(data, b, device) for b in windows[w]]
        items = sum(float(b["num_items"]) for b in micro)
        for batch in micro:
            (loss_fn(model, batch) / max(items, 1.0)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu():
            torch.cuda.synchronize()
        if n:  # the first step warms up kernels and allocates optimizer state
            times.append(time.perf_counter() - start)
            tokens.append(size[w])
    per_token = sum(times) / max(sum(tokens), 1)
    return Probe(seconds_per_step=sum(times) / len(times),
                 seconds_per_epoch=per_token * sum(size), peak_mb=peak_mb())


def _longest_row(data: Any, lengths: list[int]) -> tuple[list, int]:
    """The one-row batch to measure: the fullest packed row, or the longest example."""
    data.sampler.set_epoch(0)
    batches = data.sampler.batches()
    if batches and batches[0] and isinstance(batches[0][0], list):
        rows = [row for b in batches for row in b]
        row = max(rows, key=lambda r: sum(lengths[i] for i in r))
        return [row], sum(lengths[i] for i in row)
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    return [longest], lengths[longest]


def _sharded(parts: MemoryParts, strategy: str, zero_stage: int, world: int,
             layers: int) -> MemoryParts:
    """Per-device memory under a data-parallel strategy with `world` processes."""
    if world <= 1:
        return parts
    if strategy == "ddp":
        parts.ddp_buckets = parts.gradients
    elif strategy == "fsdp" or (strategy == "deepspeed" and zero_stage == 3):
        full_weights = parts.weights
        parts.weights /= world
        parts.gradients /= world
        parts.optimizer /= world
        parts.gathered_layer = full_weights / max(layers, 1)
    elif strategy == "deepspeed":  # ZeRO-2: gradients and optimizer state sharded
        parts.gradients /= world
        parts.optimizer /= world
    return parts


def _lora_trainable(model: torch.nn.Module, r: int) -> int:
    """Parameters LoRA of rank r on every linear layer would train."""
    return sum(r * (m.in_features + m.out_features)
               for m in model.modules() if isinstance(m, torch.nn.Linear))


def _suggestions(plan: Plan, cfg: Config, model: torch.nn.Module, world: int) -> list[str]:
    """Ways to fit, smallest change first, with the memory each one saves where it is known."""
    if plan.fits:
        return []
    mem, cap = plan.memory_mb, plan.capacity_mb
    out = []
    fixed = mem.train_peak - mem.activations
    rows = int((cap - fixed) // max(plan.activations_per_row_mb, 1e-9))
    if 1 <= rows < plan.rows_per_device:
        global_rows = cfg.train.batch_size * cfg.train.grad_accum
        accum = math.ceil(global_rows / (rows * world))
        out.append(f"--set train.batch_size={rows * world} --set train.grad_accum={accum}: same "
                   f"global batch, activations {mem.activations:.0f} -> "
                   f"{rows * plan.activations_per_row_mb:.0f} MiB")
    if cfg.peft.method == "none":
        lora = _lora_trainable(model, cfg.peft.r) * 4 / MB
        saved = mem.gradients + mem.optimizer - 3 * lora
        out.append(f"--set peft.method=lora: gradients and optimizer state shrink by about "
                   f"{saved:.0f} MiB")
    if not cfg.train.gradient_checkpointing:
        out.append("--set train.gradient_checkpointing=true: activations shrink to about the "
                   "layer inputs (rerun plan to see the figure)")
    if world > 1 and cfg.distributed.strategy == "ddp":
        out.append("--set distributed.strategy=fsdp: weights, gradients and optimizer state "
                   f"divided across the {world} processes")
    if not out:
        out.append("no setting left to lower: a device with more memory, or more devices")
    return out


# --- the plan ---------------------------------------------------------------------------------
def plan(config: str | Config, overrides: list[str] | None = None, nproc: int = 1,
         capacity_mb: float | None = None, probe_steps: int = 5) -> Plan:
    """Predict peak memory per device and time per epoch for a config, without training."""
    from accelerate.utils import set_seed

    from .models import resolve_model
    from .run import prepare_for_training, read_splits, training_data
    from .tasks import get_task

    cfg = config if isinstance(config, Config) else config_mod.load(config, overrides)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = torch.device("cuda" if on_gpu() else "cpu")
    task = get_task(cfg)
    task.set_up_cpu_memory()
    splits, _ = read_splits(cfg, task)

    set_seed(cfg.train.seed)
    model_path = resolve_model(cfg.model, Path(cfg.base_dir) if cfg.base_dir else None)
    model = task.load(model_path, splits["train"]).to(device)
    model = prepare_for_training(model, cfg, task)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(_unique_storages([*model.parameters(), *model.buffers()]).values())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    # what the process holds besides the weights once they are loaded: libraries, data, and
    # what loading left behind (CPU); the GPU allocator counts only tensors
    runtime = 0.0 if on_gpu() else max(0.0, current_mb() - weights / MB)

    data = training_data(cfg, task, splits["train"])
    lengths = [task.example_length(e) for e in data.examples]
    # the probe first: its peak must not include what the measurements below leave behind
    measured = probe(model, data, task.loss, cfg, device, lengths, probe_steps)
    row, tokens = _longest_row(data, lengths)
    one_row = micro_batch(data, row, device)
    per_row = activation_bytes_per_row(model, task.loss, one_row, tokens,
                                       cfg.train.gradient_checkpointing or False)
    world = max(1, nproc)
    rows_per_device = math.ceil(cfg.train.batch_size / world)
    layers, _ = _layers_and_hidden(model)
    parts = MemoryParts(
        runtime=runtime, weights=weights / MB, gradients=grads / MB, optimizer=2 * grads / MB,
        activations=rows_per_device * per_row / MB,
        save_copy=sum(p.numel() * p.element_size() for p in model.parameters()) / MB,
    )
    parts = _sharded(parts, cfg.distributed.strategy, cfg.distributed.zero_stage, world, layers)

    micro_per_epoch = len(data.sampler)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / cfg.train.grad_accum))
    if measured is not None and not on_gpu() and world == 1:
        parts.other = max(0.0, measured.peak_mb - parts.train_peak)
    result = Plan(
        config=str(config) if not isinstance(config, Config) else cfg.output,
        device=torch.cuda.get_device_name(0) if on_gpu() else "cpu",
        processes=world, strategy=cfg.distributed.strategy, rows_per_device=rows_per_device,
        longest_example=tokens, params=params, trainable_params=sum(p.numel() for p in trainable),
        memory_mb=parts, activations_per_row_mb=per_row / MB,
        capacity_mb=capacity_mb if capacity_mb is not None else device_capacity_mb(),
        steps_per_epoch=steps_per_epoch,
        seconds_per_step=measured.seconds_per_step if measured else None,
        seconds_per_epoch=measured.seconds_per_epoch / world if measured else None,
    )
    result.suggestions = _suggestions(result, cfg, model, world)
    return result


def format_plan(p: Plan) -> str:
    m = p.memory_mb
    lines = [
        f"plan for {p.config} on {p.device}, {p.processes} process(es), strategy {p.strategy}",
        f"model: {p.params / 1e6:.1f}M params, {p.trainable_params / 1e6:.2f}M trainable; "
        f"{p.rows_per_device} rows per device per micro-batch, longest example {p.longest_example}",
        "",
        "memory per device (MiB)",
        f"  runtime      {m.runtime:9.0f}   interpreter, libraries, data",
        f"  weights      {m.weights:9.0f}",
        f"  gradients    {m.gradients:9.0f}",
        f"  optimizer    {m.optimizer:9.0f}   AdamW moments",
        f"  activations  {m.activations:9.0f}   {p.activations_per_row_mb:.1f} per row, measured",
    ]
    if m.ddp_buckets:
        lines.append(f"  ddp buckets  {m.ddp_buckets:9.0f}")
    if m.gathered_layer:
        lines.append(f"  gathered     {m.gathered_layer:9.0f}   one unsharded layer")
    if m.other:
        lines.append(f"  other        {m.other:9.0f}   measured by the probe beyond these parts "
                     "(allocator caching, load buffers)")
    lines += [
        f"  training     {m.train_peak:9.0f}   peak of a step",
        f"  saving       {m.save_peak:9.0f}   writing the final model",
        f"  peak         {m.peak:9.0f}   of {p.capacity_mb:.0f} available: "
        + ("fits" if p.fits else "DOES NOT FIT"),
        "",
    ]
    if p.seconds_per_step is not None:
        lines.append(f"time: {p.seconds_per_step:.2f} s per probed step, {p.steps_per_epoch} steps "
                     f"per epoch, about {p.seconds_per_epoch / 60:.1f} min per epoch")
    else:
        lines.append(f"time: not probed; {p.steps_per_epoch} steps per epoch")
    if p.suggestions:
        lines += ["", "to fit:"] + [f"  {s}" for s in p.suggestions]
    return "\n".join(lines)
