"""End to end on real data: MiniLM on a MovieLens subset, through the CLI (train, predict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetunekit.cli import main
from finetunekit.run import load_run

EXAMPLE = Path(__file__).parents[1] / "examples" / "movies.yaml"


@pytest.mark.slow
def test_movies_subset_train_and_predict(tmp_path: Path, capsys):
    out = tmp_path / "movies"
    code = main(["train", str(EXAMPLE), "--quiet",
                 "--set", "data.max_rows=2500", "--set", "data.validation=null",
                 "--set", "train.max_steps=3", "--set", "train.batch_size=16",
                 "--set", "recommendation.sampled_negatives=16",
                 "--set", "train.num_threads=1", "--set", f"output={out}"])
    assert code == 0
    before = json.loads((out / "eval" / "before.json").read_text())
    after = json.loads((out / "eval" / "after.json").read_text())
    for metrics in (before, after):
        assert {"hr@10", "ndcg@10", "mrr", "coverage@10", "popularity_ndcg@10"} <= set(metrics)
    assert before["popularity_ndcg@10"] == after["popularity_ndcg@10"]  # same rows, same baseline
    details = json.loads((out / "eval" / "after_details.json").read_text())
    assert details["catalogue"] == 9066 and details["rows"] >= 10
    assert (out / "model" / "item_index.safetensors").is_file()

    capsys.readouterr()
    assert main(["predict", str(out), "--user", "1", "--k", "5"]) == 0
    shown = json.loads(capsys.readouterr().out.strip())
    assert shown["user"] == "1" and len(shown["items"]) == 5
    assert all(x["title"] for x in shown["items"])
    _, _, task, model = load_run(out)
    task._cache = None  # re-encode the catalogue with the reloaded encoder: same top-5
    task.cfg.recommendation.k = 5
    again = task.predict(model, ["1"])[0]["items"]
    assert [x["item"] for x in again] == [x["item"] for x in shown["items"]]
