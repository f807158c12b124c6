"""Memory readings that mean the same thing in `train` (measured) and `plan` (predicted).

On a GPU the figure is what PyTorch's allocator handed out (`max_memory_allocated`), the number
that decides an out-of-memory error; on CPU it is the process's resident memory (peak RSS), since
there the whole process shares the one memory.
"""

from __future__ import annotations

import os
import resource
import sys

import torch

MB = 2**20


# Our length-grouped batches give nearly every step a new shape. oneDNN (PyTorch's CPU kernels)
# caches a compiled primitive per shape, 1024 by default, each holding buffers sized for that
# shape: over a run the cache grew resident memory by about 1 GiB (MiniLM, 209 steps). Re-creating
# a primitive costs far less than a step, so the cache is off unless the user set it.
KERNEL_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def bound_cpu_kernel_cache() -> None:
    """Turn oneDNN's per-shape primitive cache off for this process (if the user did not set it).

    Read by oneDNN when it creates its first primitive, so call it before training starts."""
    os.environ.setdefault(KERNEL_CACHE_VARIABLE, "0")


def on_gpu() -> bool:
    return torch.cuda.is_available()


def peak_mb() -> float:
    """Peak memory of this process so far, in MiB (allocator peak on GPU, peak RSS on CPU)."""
    if on_gpu():
        return torch.cuda.max_memory_allocated() / MB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def current_mb() -> float:
    """Memory in use now, in MiB, on the same scale as `peak_mb`."""
    if on_gpu():
        return torch.cuda.memory_allocated() / MB
    import psutil

    return psutil.Process().memory_info().rss / MB


def device_capacity_mb() -> float:
    """What one device can hold: the GPU's memory, or the memory the system has available."""
    if on_gpu():
        return torch.cuda.get_device_properties(0).total_memory / MB
    import psutil

    return psutil.virtual_memory().available / MB
