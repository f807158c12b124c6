"""The paired bootstrap interval of a before -> after change, and the per-row terms every task
gives it (evaluate/significance.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_task, write_jsonl

from finetunekit.evaluate.significance import RowScores, paired_changes


def scores(name: str, values, denominators=None, rows=None) -> RowScores:
    result = RowScores(rows or [f"test.jsonl:{i + 1}" for i in range(len(values))])
    if denominators is None:
        result.add_mean(name, values)
    else:
        result.add(name, values, denominators)
    return result


def test_the_interval_of_a_paired_accuracy_change_matches_the_normal_approximation() -> None:
    # 1,000 rows where the two models disagree on a fifth: the paired change's standard error
    # is sd(after - before) / sqrt(n), and the bootstrap's 95% interval spans about 2 x 1.96 of it
    rng = np.random.default_rng(3)
    before = (rng.random(1000) < 0.75).astype(float)
    after = before.copy()
    flip = rng.random(1000) < 0.2
    after[flip] = (rng.random(flip.sum()) < 0.7).astype(float)
    change = paired_changes(scores("accuracy", before), scores("accuracy", after))["accuracy"]

    assert change["change"] == pytest.approx(after.mean() - before.mean())
    assert change["before"] == pytest.approx(before.mean())
    assert change["low"] < change["change"] < change["high"]
    expected = 2 * 1.96 * (after - before).std() / math.sqrt(1000)
    assert change["high"] - change["low"] == pytest.approx(expected, rel=0.12)
    # unpaired, the same two accuracies would have a wider interval: pairing is what narrows it
    unpaired = 2 * 1.96 * math.sqrt(before.var() / 1000 + after.var() / 1000)
    assert change["high"] - change["low"] < 0.8 * unpaired


def test_a_clear_gain_excludes_zero_and_a_coin_flip_does_not() -> None:
    rng = np.random.default_rng(0)
    before = (rng.random(500) < 0.6).astype(float)
    clear = np.maximum(before, rng.random(500) < 0.5)  # right wherever before was, and more
    coin = np.where(rng.random(500) < 0.5, before, 1 - before)
    assert paired_changes(scores("a", before), scores("a", clear))["a"]["low"] > 0
    same = paired_changes(scores("a", before), scores("a", coin))["a"]
    assert same["low"] < 0 < same["high"]
    identical = paired_changes(scores("a", before), scores("a", before))["a"]
    assert identical["low"] == identical["high"] == identical["change"] == 0


def test_ratio_metrics_resample_numerators_and_denominators_together() -> None:
    # WER: errors over reference words; one long utterance weighs more than a short one
    words = [20, 2, 2, 2]
    before = scores("wer", [10, 1, 1, 1], words)
    after = scores("wer", [2, 1, 1, 1], words)
    change = paired_changes(before, after, resamples=400)["wer"]
    assert change["before"] == pytest.approx(13 / 26)
    assert change["change"] == pytest.approx(5 / 26 - 13 / 26)
    assert change["high"] <= 0  # no resample makes the tuned model worse


def test_different_rows_are_not_paired() -> None:
    before = scores("a", [1.0, 0.0], rows=["a:1", "a:2"])
    after = scores("a", [1.0, 1.0], rows=["a:2", "a:1"])
    assert paired_changes(before, after) == {}
    with pytest.raises(ValueError, match="3 numerators"):
        scores("a", [1.0, 1.0, 1.0], rows=["a:1"])


def test_row_scores_round_trip_through_json() -> None:
    original = scores("wer", [1, 2], [3, 4])
    again = RowScores.from_json(json.loads(json.dumps(original.to_json())))
    assert again == original and again.value("wer") == pytest.approx(3 / 7)


@pytest.mark.parametrize("multi_label", [False, True])
def test_classification_row_scores_give_its_metrics(tmp_path, tiny_config, multi_label) -> None:
    if multi_label:  # the same files, each row's label a set
        for path in (tiny_config.data.train, tiny_config.data.test):
            rows = [json.loads(x) for x in Path(path).read_text().splitlines()]
            write_jsonl(Path(path), [{**r, "score": [[r["score"]], [], ["x", r["score"]]][i % 3]}
                                     for i, r in enumerate(rows)])
    task, splits, _ = load_task(tiny_config)
    test = splits["test"]
    logits = torch.randn(len(test), len(task.labels), generator=torch.Generator().manual_seed(1))
    result = task._result(logits, test)
    names = ("micro_f1", "subset_accuracy", "loss") if multi_label else ("accuracy", "loss")
    assert set(result.row_scores.metrics) == set(names)
    for name in names:
        assert result.row_scores.value(name) == pytest.approx(result.metrics[name], abs=1e-6)
    assert result.row_scores.rows == [r["where"] for r in result.predictions]


def test_a_run_prints_and_keeps_each_change_with_its_interval(tiny_config, capsys) -> None:
    import finetunekit
    from finetunekit.evaluate.report import render

    run = finetunekit.train(tiny_config, progress=False)
    changes = run.changes
    assert set(changes) == {"accuracy", "loss"}  # macro-F1 is not a sum over rows
    for name, change in changes.items():
        assert change["before"] == pytest.approx(run.before[name])
        assert change["after"] == pytest.approx(run.after[name])
        assert change["low"] <= change["change"] <= change["high"]
    saved = json.loads((run.dir / "eval" / "comparison.json").read_text())
    assert saved["rows"] == 32 and saved["level"] == 0.95
    kept = RowScores.from_json(json.loads((run.dir / "eval" / "after_rows.json").read_text()))
    assert kept.value("accuracy") == pytest.approx(run.after["accuracy"])
    table = capsys.readouterr().err
    low, high = changes["accuracy"]["low"], changes["accuracy"]["high"]
    assert f"[{low:+.4f}, {high:+.4f}]" in table
    assert "paired bootstrap over the 32 held-out rows" in table
    page = render(run.dir)
    assert "95% interval" in page and f"[{low:+.4f}, {high:+.4f}]" in page
