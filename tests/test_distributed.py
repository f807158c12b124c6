"""Data parallelism through Accelerate on CPU (gloo): 2 processes equal 1 with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def run(config: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FINETUNEKIT_QUIET": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "finetunekit", "train", str(config), "--quiet", "--nproc", str(nproc)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_match_one(tmp_path: Path, tiny_config, no_dropout_bert: Path) -> None:
    outputs = {}
    for nproc in (1, 2):
        raw = tiny_config.model_dump(mode="json")
        raw["model"] = str(no_dropout_bert)
        raw["output"] = str(tmp_path / f"run{nproc}")
        raw["train"].update({"batch_size": 8, "epochs": 2, "eval_every": 4, "group_by_length": False,
                             "checkpoint_every": 4})
        config = tmp_path / f"c{nproc}.yaml"
        config.write_text(yaml.safe_dump(raw))
        result = run(config, nproc)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[nproc] = Path(raw["output"])
    one, two = (load_file(str(outputs[n] / "model" / "model.safetensors")) for n in (1, 2))
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 1e-5
    curve = {n: [json.loads(x) for x in (outputs[n] / "metrics.jsonl").read_text().splitlines()]
             for n in (1, 2)}
    assert [r["step"] for r in curve[1]] == [r["step"] for r in curve[2]]  # rank 0 alone logs
    for a, b in zip(curve[1], curve[2], strict=True):
        for key in ("loss", "eval_loss"):
            if key in a:
                assert abs(a[key] - b[key]) < 1e-5
