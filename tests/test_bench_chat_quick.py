"""The chat SFT bench still runs end to end (quick mode: tiny model, a few steps, all runs).

Why: the bench is not part of `make test`, so without this it would rot silently; the quick mode
goes through the same code (data, child processes, finetunekit and TRL runs, JSON figures).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from chat_fixtures import needs_smollm2, smollm2_spec

from finetunekit.run import cpu_has_bf16

REPO = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                       reason="the bench needs the optional `bench` extra (TRL)"),
    needs_smollm2,  # its tokenizer; the bench's model is random-init
]
KEYS = {"trained_tokens_per_s", "s_per_step", "peak_rss_mb", "final_loss", "mfu",
        "gradient_checkpointing", "precision"}
DEFAULT_RUNS = ("finetunekit_full", "finetunekit_lora", "finetunekit_full_gc", "trl_default_full",
                "trl_packing_full", "trl_default_lora", "trl_packing_lora")
# bf16 on CPU needs bf16 instructions (finetunekit refuses it elsewhere, as emulation is slow)
BF16_RUNS = (("trl_default_full_bf16", "finetunekit_full_bf16")
             if cpu_has_bf16() or torch.cuda.is_available() else ())
# an opt-in run under torch.compile, after the checkpointing suffix it composes with
COMPILE_RUNS = ("finetunekit_lora_nogc_compile",)


def test_bench_quick_writes_all_figures(tmp_path):
    out = tmp_path / "chat_sft.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "chat_sft.py"), "--quick",
                           "--threads", "1", "--out", str(out), "--tokenizer", smollm2_spec(),
                           "--runs", ",".join(DEFAULT_RUNS + BF16_RUNS + COMPILE_RUNS)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["matmul_gflops"] == max(result["matmul_gflops_readings"]) > 0  # start and end
    on_gpu = torch.cuda.is_available()  # then every run trains there and reports its GPU peak
    assert (result["device"] == "cpu") is not on_gpu
    for name in DEFAULT_RUNS + BF16_RUNS + COMPILE_RUNS:
        figures = result[name]
        assert KEYS <= set(figures), name
        assert figures["trained_tokens_per_s"] > 0 and figures["s_per_step"] > 0, name
        assert 0 < figures["mfu"] < 1.5 and figures["peak_rss_mb"] > 50, name
        assert ("peak_gpu_mb" in figures) is on_gpu, name
    assert result["finetunekit_full_gc"]["gradient_checkpointing"] is True
    # finetunekit_full runs with our defaults: chat checkpoints activations selectively
    assert result["finetunekit_full"]["gradient_checkpointing"] == "selective"
    assert result["finetunekit_lora"]["mfu_counting_adapters"] > result["finetunekit_lora"]["mfu"]
    compiled = result["finetunekit_lora_nogc_compile"]
    assert compiled["gradient_checkpointing"] is False and compiled["precision"] == "fp32"
    # compiling happens in the untimed warm-up, which every run reports
    assert all(result[name]["warmup_s"] > 0 for name in DEFAULT_RUNS + COMPILE_RUNS)
    # the job is fp32 on both sides (TRL's own default would be bf16 autocast); _bf16 runs opt in
    assert {result[name]["precision"] for name in DEFAULT_RUNS} == {"fp32"}
    if BF16_RUNS:
        assert {result[name]["precision"] for name in BF16_RUNS} == {"bf16"}
        assert result["matmul_gflops_bf16"] > 0
