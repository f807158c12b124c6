"""The multi-label decision threshold: fixed (`eval.threshold: 0.3`) or tuned on the validation
split for the tuned model and its linear probe alike, and kept in the model for `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_task, write_jsonl
from test_multilabel import make_tagged, tagged_config  # noqa: F401 (a fixture)

from finetunekit import config as config_mod
from finetunekit.errors import UserError
from finetunekit.evaluate.classification import best_threshold
from finetunekit.run import evaluate_run, predict


def test_the_threshold_that_scores_best_is_chosen_nearest_one_half_on_ties() -> None:
    # positives at 0.30-0.40, negatives at 0.10-0.20: any threshold from 0.25 to 0.40 is perfect
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 3)) < 0.3).astype(int)
    probs = np.where(truth == 1, rng.uniform(0.30, 0.40, truth.shape),
                     rng.uniform(0.10, 0.20, truth.shape))
    assert best_threshold(truth, probs, "micro_f1") == 0.3
    assert best_threshold(truth, probs, "loss") == 0.3  # a metric no threshold moves: micro-F1
    # the whole set right in every row rewards the same here
    assert best_threshold(truth, probs, "subset_accuracy") == 0.3
    # well-separated around 0.5: 0.5 itself is kept
    assert best_threshold(truth, np.where(truth == 1, 0.9, 0.1), "micro_f1") == 0.5


@pytest.mark.parametrize("raw, message", [
    ({"task": "text-classification", "eval": {"threshold": 1.5}}, "between 0 and 1"),
    ({"task": "chat", "eval": {"threshold": "tuned"}}, "'eval.threshold' applies to text-class"),
])
def test_threshold_settings_are_checked(tmp_path: Path, raw: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        config_mod.validate({**raw, "model": "x", "output": str(tmp_path),
                             "data": {"train": "t.jsonl"}})


def test_a_threshold_needs_label_sets_and_tuning_needs_both_held_out_splits(
        tiny_config, tagged_config) -> None:  # noqa: F811
    tiny_config.eval.threshold = 0.3
    with pytest.raises(UserError, match="applies to multi-label rows"):
        load_task(tiny_config)
    tagged_config.eval.threshold = "tuned"
    tagged_config.data.validation = None
    with pytest.raises(UserError, match="needs both: set data.validation and data.test"):
        load_task(tagged_config)


def test_a_fixed_threshold_decides_eval_and_predict(tagged_config) -> None:  # noqa: F811
    import finetunekit

    tagged_config.eval.threshold = 0.3
    tagged_config.train.epochs = 1
    run = finetunekit.train(tagged_config, progress=False)
    assert json.loads((run.dir / "eval" / "after_details.json").read_text())["threshold"] == 0.3
    answer = predict(run.dir, ["tasty and rotten"])[0]
    scores = {t["label"]: t["score"] for t in answer["top"]}
    assert set(answer["labels"]) == {name for name, p in scores.items() if p >= 0.3}


def test_a_tuned_threshold_is_chosen_on_validation_and_kept(tagged_config) -> None:  # noqa: F811
    import finetunekit

    # each tag on a fifth of the rows: the head starts at those rates (p = 0.2), and after a
    # short, slow epoch no score reaches 0.5, so 0.5 predicts nothing and a lower one does better
    for path, seed in ((tagged_config.data.train, 1), (tagged_config.data.test, 2)):
        rows = make_tagged(len(Path(path).read_text().splitlines()), seed)
        for i, row in enumerate(rows):
            row["tags"] = [["sweet"], ["spoiled"], [], [], []][i % 5]
        write_jsonl(Path(path), rows)
    tagged_config.eval.threshold = "tuned"
    tagged_config.train.epochs, tagged_config.train.lr = 1, 1e-5
    run = finetunekit.train(tagged_config, progress=False)

    after = json.loads((run.dir / "eval" / "after_details.json").read_text())
    saved = json.loads((run.dir / "model" / "config.json").read_text())
    assert saved["finetunekit_threshold"] == after["threshold"]
    assert after["threshold"] < 0.5 and run.after["micro_f1"] > 0
    before = json.loads((run.dir / "eval" / "before_details.json").read_text())
    assert "tuned on the validation split" in before["baseline"]
    # `eval` and `predict` read the model's own threshold back
    again = evaluate_run(run.dir, str(tagged_config.data.test))
    assert again.details["threshold"] == after["threshold"]
    assert again.metrics["micro_f1"] == pytest.approx(run.after["micro_f1"])
    answer = predict(run.dir, ["tasty and rotten"])[0]
    scores = {t["label"]: t["score"] for t in answer["top"]}
    assert set(answer["labels"]) == {n for n, p in scores.items() if p >= after["threshold"]}
