"""Memory readings that mean the same thing in `train` (measured) and `plan` (predicted).

On a GPU the figure is what PyTorch's allocator handed out (`max_memory_allocated`), the number
that decides an out-of-memory error; on CPU it is the process's resident memory (peak RSS), since
there the whole process shares the one memory.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Mapping

import torch

MB = 2**20


# Our length-grouped batches give nearly every step a new shape, which CPU memory handles badly
# in two ways, measured on the food-reviews run (MiniLM, 209 steps, peak RSS 3,701 MiB at first):
# - oneDNN (PyTorch's CPU kernels) caches a compiled primitive per shape, up to 1,024, each with
#   buffers sized for its shape: about 1 GiB over the run. Re-creating one costs far less than a
#   step, so the cache is turned off (peak 2,581 MiB, same speed).
# - glibc's malloc raises its mmap threshold as large blocks are freed (up to 32 MiB), after which
#   activations of ever-changing sizes are carved out of a heap that fragments and never shrinks.
#   A fixed, lower threshold hands large tensors back to the system when freed, at a price: each
#   is then a fresh mapping the kernel must fault in and zero-fill on its next use. How much that
#   costs depends on the host (page faults were far dearer on some hosts than on others), so each
#   task picks its policy (Task.cpu_mmap_threshold_mb), measured on its bench:
#   food reviews, 40 steps: 4 MiB 2,185 MiB peak, 67-72 s; 32 MiB 2,500-2,590 MiB, 60-62 s (more
#   than the HF Trainer's 2,404 MiB: the memory target binds). Padding lengths to a multiple of
#   8 or 16 (fewer shapes) changed neither figure. Huge pages for those mappings (PyTorch's
#   THP_MEM_ALLOC_ENABLE=1, fewer faults) were slower still: 85-97 s against 72-75 s (this
#   host's THP defrag setting, "madvise", lets such faults stall to compact memory).
#   That price is paid per block of the threshold's size or more, so it is small while most
#   batches are short, as length-grouped ones are, and large where most are near full length:
#   in file order, without grouping (or packed), nearly every activation is mapped and faulted in
#   again at each use. Food reviews in file order, 40 steps, two runs each alternated:
#   4 MiB 9.1-9.4 examples/s, peak 1,997-2,006 MiB; 8 MiB 12.3-13.4, 2,436-2,489; 16 MiB
#   12.6-13.1, 2,478-2,482; 32 MiB 12.6-13.4, 2,483-2,514; glibc's own (dynamic) 12.7-13.9,
#   2,525-2,591. So ungrouped batches take glibc's own ceiling, fixed from the first step
#   (UNGROUPED_MMAP_THRESHOLD_MB): 1.4x the speed for a 25% higher peak.
# - The other end, `None`: every freed block stays in the one heap for reuse (no mmap, no trim,
#   one arena), so after the largest batches have come, a step faults in no fresh page. Chat
#   takes it (see ChatSFT): its sequences are 4x longer, its steps 30x dearer, and a step of
#   faults costs seconds. The heap grows only while a batch needs more than it holds and stops
#   once it holds the run's largest (the costliest batch comes first in each epoch).
#   One thing breaks that reuse: glibc's per-thread cache (tcache) holds up to 7 freed small
#   blocks of each size as still in use, so they never merge with the free space around them.
#   Scattered through the freed activations, they cut it into pieces too small for the next long
#   batch, and the heap grows anyway. Measured on the chat bench's LoRA run (steps 1-7): after
#   the first (longest) batch the heap held 5.4 GiB free, yet a later, shorter batch grew it by
#   0.9-1.4 GiB; with the cache off, by 0.3 GiB: peak 6.7 against 7.4-8.2 GiB, and 424 against
#   330-355 trained tokens/s over steps 3-7 (page faults cost 10-15 us each on this host). glibc
#   reads that setting only at start-up (GLIBC_TUNABLES), so `finetunekit train` (and `plan`)
#   start again with it (`allocator_environment`); a notebook's process keeps its cache.
# Both only where the user has not set them (the environment variables below win), and only for
# tasks whose batch shapes vary (Task.varied_shapes): with fixed shapes the kernel cache is reused
# every step and the heap does not fragment.
UNGROUPED_MMAP_THRESHOLD_MB = 32  # glibc's largest dynamic threshold on 64-bit (man mallopt)
KERNEL_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                    "MALLOC_ARENA_MAX")
# mallopt parameter numbers in glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8
KEEP_TUNABLES = "glibc.malloc.tcache_count=0"
# set beside GLIBC_TUNABLES by `allocator_environment`: the malloc tunables there are ours, so
# set_up_cpu_memory still applies its settings, and a started-again process does not start again
OUR_TUNABLES_VARIABLE = "FINETUNEKIT_GLIBC_TUNABLES"


def _user_set_allocator(environ: Mapping[str, str]) -> bool:
    """Whether the user configured glibc's malloc (MALLOC_* or glibc.malloc.* tunables other
    than the ones `allocator_environment` added)."""
    if any(name in environ for name in MALLOC_VARIABLES):
        return True
    ours = set(filter(None, environ.get(OUR_TUNABLES_VARIABLE, "").split(":")))
    theirs = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t not in ours]
    return any(t.startswith("glibc.malloc.") for t in theirs)


def allocator_environment(mmap_threshold_mb: int | None,
                          environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables a process that trains with this policy must start with (see above): for `None`
    (keep freed blocks for reuse), glibc's per-thread cache off. Empty when the policy needs none,
    when the user has set the allocator, when they are already in place, or off Linux."""
    environ = os.environ if environ is None else environ
    if (mmap_threshold_mb is not None or not sys.platform.startswith("linux")
            or OUR_TUNABLES_VARIABLE in environ or _user_set_allocator(environ)):
        return {}
    tunables = ":".join(filter(None, [environ.get("GLIBC_TUNABLES", ""), KEEP_TUNABLES]))
    return {"GLIBC_TUNABLES": tunables, OUR_TUNABLES_VARIABLE: KEEP_TUNABLES}


def set_up_cpu_memory(mmap_threshold_mb: int | None = 4) -> None:
    """Keep CPU training's memory from creeping, or from being faulted in again, with varied
    batch shapes (see above): blocks of `mmap_threshold_mb` MiB and more go back to the system
    when freed; `None` keeps every freed block in the heap for reuse instead.

    Call before training starts: oneDNN reads its variable when it creates its first primitive,
    and the malloc settings apply to allocations made from then on."""
    os.environ.setdefault(KERNEL_CACHE_VARIABLE, "0")
    if on_gpu() or not sys.platform.startswith("linux") or _user_set_allocator(os.environ):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return
    if mmap_threshold_mb is not None:
        mallopt(M_MMAP_THRESHOLD, mmap_threshold_mb * MB)
        return
    mallopt(M_MMAP_MAX, 0)  # no block gets a mapping of its own, to be unmapped when freed
    mallopt(M_TRIM_THRESHOLD, -1)  # -1: the heap's free top is never handed back (man mallopt)
    mallopt(M_ARENA_MAX, 1)  # other threads' blocks in the same heap, not in trimmable ones


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
