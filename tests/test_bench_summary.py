"""The text bench's accuracy verdict: the paired gap, its interval and the seed counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "text_classification.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("text_classification_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_gap_is_students_t_interval_and_counts_signs() -> None:
    gap = load_bench().paired_gap([0.01, -0.01, 0.0])
    # mean 0, sample stdev 0.01, standard error 0.01 / sqrt(3); t(0.975, 2 df) = 4.3027
    assert gap["accuracy_delta_mean"] == pytest.approx(0.0, abs=1e-12)
    assert gap["accuracy_delta_stderr"] == pytest.approx(0.01 / 3 ** 0.5)
    low, high = gap["accuracy_delta_ci95"]
    assert (low, high) == (pytest.approx(-0.024841, abs=1e-6), pytest.approx(0.024841, abs=1e-6))
    assert gap["accuracy_delta_signs"] == {"lower": 1, "equal": 1, "higher": 1}


def test_summary_pairs_runs_by_seed() -> None:
    bench = load_bench()
    run = {"examples_per_s": 2.0, "wall_s": 1.0, "peak_rss_mb": 100.0}
    ours = [{**run, "seed": s, "accuracy": a} for s, a in [(1, 0.80), (2, 0.84), (3, 0.83)]]
    theirs = [{**run, "seed": s, "accuracy": a, "examples_per_s": 1.0}
              for s, a in [(3, 0.82), (1, 0.81), (9, 0.50)]]
    results: dict = {"settings": {}}
    bench.summarize(results, {"finetunekit": ours, "hf_trainer": theirs})
    paired = results["paired"]
    assert paired["seeds"] == [1, 3]  # seed 2 has no Trainer run, seed 9 none of ours
    assert paired["accuracy_deltas"] == [pytest.approx(-0.01), pytest.approx(0.01)]
    assert paired["accuracy_delta_signs"] == {"lower": 1, "equal": 0, "higher": 1}
    assert paired["examples_per_s_ratios"] == [2.0, 2.0]
