"""The speed switches (attention kernel, torch.compile, bf16): each reaches the model, is written
into the resolved config, and fails with one line when the machine cannot honour it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetunekit import run as run_mod
from finetunekit.cli import main
from finetunekit.tasks import get_task


def _task_and_rows(cfg):
    task = get_task(cfg)
    return task, task.read(Path(cfg.data.train), display="train").rows


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_attention_choice_reaches_the_model(tiny_config, attention: str) -> None:
    tiny_config.train.attention = attention
    task, rows = _task_and_rows(tiny_config)
    model = task.load(tiny_config.model, rows)
    assert model.config._attn_implementation == attention


def _train_refused(tiny_config, tmp_path: Path, capsys, key: str, value: str) -> tuple[str, Path]:
    """`finetunekit train` with train.<key> = value, which must fail with one line; returns the
    line and the run's output folder."""
    raw = tiny_config.model_dump(mode="json")
    raw["train"][key] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err, Path(raw["output"])


def test_unavailable_attention_is_a_one_line_error(tiny_config, tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("on a GPU with flash-attn this would load")
    err, output = _train_refused(tiny_config, tmp_path, capsys, "attention", "flash_attention_2")
    assert err.startswith("error: model ")
    assert not (output / "run.json").exists()


def test_switches_are_written_into_the_resolved_config(tiny_config) -> None:
    from finetunekit.config import to_yaml

    tiny_config.train.attention, tiny_config.train.compile = "eager", True
    written = yaml.safe_load(to_yaml(tiny_config))["train"]
    assert written["attention"] == "eager" and written["compile"] is True
    assert "strategy" in yaml.safe_load(to_yaml(tiny_config))["distributed"]


def test_compile_after_an_eager_run_in_the_same_process_is_honoured(tiny_config) -> None:
    """Accelerate's process-wide state kept the first run's (absent) dynamo plugin, so a compiled
    run after an eager one silently trained eagerly; each run now gets its own."""
    run_mod._accelerator(tiny_config)  # eager
    tiny_config.train.compile = True
    compiled = run_mod._accelerator(tiny_config)
    assert compiled.state.dynamo_plugin.backend.value == "INDUCTOR"
    model = compiled.prepare(torch.nn.Linear(2, 2))
    assert hasattr(model, "_orig_mod")  # wrapped by torch.compile
    tiny_config.train.compile = False
    assert run_mod._accelerator(tiny_config).state.dynamo_plugin.backend.value == "NO"


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_config, tmp_path: Path) -> None:
    """torch.compile (inductor, on CPU here) trains the same weights, within float noise, and
    checkpoints keep plain parameter names. Inductor draws dropout masks from its own generator
    unless told to use eager's, which the comparison needs (the model has dropout)."""
    import torch._inductor.config

    # config.patch, not monkeypatch: pytest's undo deletes the key from torch's config module,
    # and every later inductor compile in this worker that misses the kernel cache then fails
    # on `config.fallback_random does not exist` (test_lean_layers' fused kernels, say)
    weights = {}
    with torch._inductor.config.patch(fallback_random=True):
        for compiled in (False, True):
            tiny_config.train.compile = compiled
            tiny_config.train.max_steps = 4
            tiny_config.train.checkpoint_every = 2
            tiny_config.output = str(tmp_path / f"run-{compiled}")
            run = run_mod.train(tiny_config, progress=False)
            assert run.status["status"] == "complete"
            weights[compiled] = load_file(str(run.model_dir / "model.safetensors"))
            step = sorted((run.dir / "checkpoints").glob("step-*"))[-1]
            keys = load_file(str(step / "model.safetensors")).keys()
            assert not any("_orig_mod" in k for k in keys)
    diff = max(float((weights[True][k] - weights[False][k]).abs().max()) for k in weights[False])
    assert diff < 1e-4, diff


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast and SDPA kernels: GPU")
def test_bf16_sdpa_on_gpu(tiny_config, tmp_path: Path) -> None:
    tiny_config.train.precision, tiny_config.train.attention = "bf16", "sdpa"
    tiny_config.train.max_steps = 4
    tiny_config.output = str(tmp_path / "gpu")
    run = run_mod.train(tiny_config, progress=False)
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert json.loads((run.dir / "run.json").read_text())["peak_memory_mb"] > 0


def test_bf16_on_a_cpu_without_bf16_is_a_one_line_error(tiny_config, tmp_path: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU takes bf16")
    monkeypatch.setattr(run_mod, "cpu_has_bf16", lambda: False)
    err, output = _train_refused(tiny_config, tmp_path, capsys, "precision", "bf16")
    assert "bf16 needs a GPU or a CPU with bf16 instructions" in err
    assert not (output / "model").exists()


@pytest.mark.skipif(torch.cuda.is_available() or not run_mod.cpu_has_bf16(),
                    reason="CPU bf16 autocast: a CPU with AVX512-BF16 or AMX and no GPU")
def test_bf16_on_a_cpu_with_bf16_trains_under_autocast(tiny_config, tmp_path: Path) -> None:
    """bf16 on such a CPU is Accelerate's CPU autocast: matmuls run in bf16, weights stay fp32.
    An fp32 Accelerator made first in the same process does not stand in the way."""
    run_mod._accelerator(tiny_config)  # fp32 (auto on CPU)
    tiny_config.train.precision = "bf16"
    accelerator = run_mod._accelerator(tiny_config)
    assert accelerator.mixed_precision == "bf16"
    layer = torch.nn.Linear(4, 4)
    with accelerator.autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    tiny_config.train.max_steps = 3
    tiny_config.output = str(tmp_path / "cpu-bf16")
    run = run_mod.train(tiny_config, progress=False)
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    saved = load_file(str(run.model_dir / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())


def test_deterministic_kernels_are_set_per_run(tiny_config, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """train.deterministic turns torch's deterministic algorithms on for its run, and a later
    run without it turns them off again: one run does not leave a process on slower kernels."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    tiny_config.train.max_steps = 1
    seen = []
    for deterministic in (True, False):
        tiny_config.train.deterministic = deterministic
        tiny_config.output = str(tmp_path / f"run-{deterministic}")
        run_mod.train(tiny_config, progress=False)
        seen.append(torch.are_deterministic_algorithms_enabled())
    assert seen == [True, False]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
