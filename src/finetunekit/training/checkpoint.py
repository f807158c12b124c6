"""Checkpoints with everything exact resume needs, written atomically.

`checkpoints/step-N/` holds the weights being trained (the whole model, or only the trainable
adapter / head tensors for PEFT runs), optimizer and scheduler state, every RNG state and the
loop's own state (position in the data, early stopping, bad-step counter). A folder only gets its
final name once every file in it is on disk, so "the newest `step-N`" is always complete.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_dir, atomic_write_json

STEP_DIR = re.compile(r"^step-(\d+)$")


def weights_to_save(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint must hold; tied / shared tensors are stored once."""
    if trainable_only:
        state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    else:
        state = dict(model.state_dict())
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:
            continue  # tied weight: restored through its twin
        seen[key] = name
        out[name] = tensor.detach().to("cpu").contiguous().clone()
    return out


def load_weights(model: torch.nn.Module, path: Path) -> None:
    state = load_file(str(path))
    missing_ok = model.load_state_dict(state, strict=False)
    unexpected = missing_ok.unexpected_keys
    if unexpected:
        raise RuntimeError(f"checkpoint {path} has tensors the model lacks: {unexpected[:5]}")


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    plain = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop_state: dict[str, Any],
    trainable_only: bool,
    scaler: Any = None,
) -> None:
    with atomic_dir(folder) as tmp:
        save_file(weights_to_save(model, trainable_only), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        tensors, plain = rng_state()
        save_file(tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "rng.json", plain)
        atomic_write_json(tmp / "state.json", loop_state)


def checkpoint_state(folder: Path) -> dict[str, Any]:
    """The loop state a checkpoint was written with (step, fingerprint, history, ...): read on
    its own first, so a resume with another config is refused by name before the checkpoint's
    tensors meet a model they may not fit."""
    import json

    return json.loads((folder / "state.json").read_text())


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any = None
) -> None:
    """Weights, optimizer, schedule, scaler and RNG streams back as they were (the loop state
    comes from `checkpoint_state`)."""
    import json

    load_weights(model, folder / "model.safetensors")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler is not None and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    set_rng_state(
        load_file(str(folder / "rng.safetensors")),
        json.loads((folder / "rng.json").read_text()),
    )


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints, oldest first (temporary folders are never listed)."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / "state.json").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def prune_checkpoints(root: Path, keep: int) -> None:
    """Keep the newest `keep` step checkpoints (the best model lives apart, in `best/`)."""
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    for leftover in root.glob(".step-*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
