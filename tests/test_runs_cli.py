"""`finetunekit runs`, `compare` and `report` on fake run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_runs import make_run

from finetunekit.cli import main
from finetunekit.errors import UserError
from finetunekit.evaluate.significance import RowScores
from finetunekit.runs import compare, flatten, list_runs, tracker_config

METRICS = [{"step": 5, "loss": 0.6}, {"step": 5, "eval_accuracy": 0.7, "eval_loss": 0.5},
           {"step": 10, "loss": 0.4}, {"step": 10, "eval_accuracy": 0.75, "eval_loss": 0.45}]


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "alpha", METRICS, lr=1e-4, after_accuracy=0.8, text="other")
    make_run(root / "beta", METRICS, lr=3e-5, after_accuracy=0.9, text="other",
             model="builtin:smollm2")
    crashed = root / "gamma"
    crashed.mkdir()
    (crashed / "config.yaml").write_text("task: chat\nmodel: some/model\n")
    (crashed / "run.json").write_text(json.dumps({"status": "running", "task": "chat",
                                                  "model": "some/model"}))
    (root / "not-a-run").mkdir()
    return root


def test_list_runs(runs_dir: Path) -> None:
    runs = {r.path.name: r for r in list_runs(runs_dir)}
    assert set(runs) == {"alpha", "beta", "gamma"}
    assert runs["alpha"].after == pytest.approx(0.8)
    assert runs["beta"].after == pytest.approx(0.9)
    assert runs["beta"].model == "builtin:smollm2"
    assert runs["alpha"].metric == "accuracy" and runs["alpha"].best == pytest.approx(0.75)
    assert runs["alpha"].before == pytest.approx(0.5)
    assert runs["gamma"].status == "running" and runs["gamma"].after is None


def test_runs_cli(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(runs_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["run", "task", "model", "status"]
    by_name = {line.split()[0]: line.split() for line in out[1:]}
    assert set(by_name) == {"alpha", "beta", "gamma"}
    assert by_name["beta"][1:4] == ["text-classification", "builtin:smollm2", "complete"]
    assert by_name["beta"][-1] == "0.9000" and by_name["alpha"][-1] == "0.8000"
    assert by_name["gamma"][3] == "running"


def test_runs_cli_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_compare(runs_dir: Path) -> None:
    c = compare(runs_dir / "alpha", runs_dir / "beta")
    after = {name: (a, b) for split, name, a, b in c.metrics if split == "after"}
    assert after["accuracy"] == (pytest.approx(0.8), pytest.approx(0.9))
    changed = {key: (a, b) for key, a, b in c.config}
    assert changed["train.lr"] == (1e-4, 3e-5)
    assert changed["model"] == ("builtin:minilm", "builtin:smollm2")
    assert "train.batch_size" not in changed  # equal keys are not listed
    assert "output" in changed


def test_compare_cli(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs_dir / "alpha"), str(runs_dir / "beta")]) == 0
    out = capsys.readouterr().out
    acc = [line.split() for line in out.splitlines() if line.split()[:2] == ["after", "accuracy"]]
    assert acc == [["after", "accuracy", "0.8000", "0.9000", "+0.1000"]]
    lr = [line.split() for line in out.splitlines() if line.startswith("train.lr")]
    assert lr == [["train.lr", "0.0001", "3e-05"]]


def test_compare_gives_the_paired_interval_of_two_tuned_models(
        runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [f"test.jsonl:{i}" for i in range(1, 401)]
    for name, right in (("alpha", range(0, 320)), ("beta", range(0, 360))):  # B: 40 rows more
        scores = RowScores(rows)
        scores.add_mean("accuracy", [float(i in right) for i in range(400)])
        (runs_dir / name / "eval" / "after_rows.json").write_text(json.dumps(scores.to_json()))
    change = compare(runs_dir / "alpha", runs_dir / "beta").changes["accuracy"]
    assert change["change"] == pytest.approx(0.1)
    assert 0 < change["low"] < 0.1 < change["high"]  # B is right wherever A is: a clear gain
    assert main(["compare", str(runs_dir / "alpha"), str(runs_dir / "beta")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.split()[:2] == ["after", "accuracy"])
    assert line.split()[-2:] == [f"[{change['low']:+.4f},", f"{change['high']:+.4f}]"]
    assert "paired bootstrap over the 400 held-out rows" in out

    other = RowScores([f"other.jsonl:{i}" for i in range(1, 401)])  # B scored other rows
    other.add_mean("accuracy", [1.0] * 400)
    (runs_dir / "beta" / "eval" / "after_rows.json").write_text(json.dumps(other.to_json()))
    assert compare(runs_dir / "alpha", runs_dir / "beta").changes == {}


def test_compare_identical_and_missing_keys(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", METRICS, text="other")
    b = make_run(tmp_path / "b", METRICS, text="other")
    (b / "config.yaml").write_text((a / "config.yaml").read_text() + "resume: true\nnew_key: null\n")
    changed = {key: (x, y) for key, x, y in compare(a, b).config}
    assert list(changed) == ["resume"]  # absent and null are the same setting
    assert changed["resume"][1] is True
    with pytest.raises(UserError, match="not a run directory"):
        compare(a, tmp_path / "missing")


def test_report_cli_rebuilds_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", METRICS, text="other")
    assert not (run / "report.html").exists()
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert "<html" in (run / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_flatten_and_tracker_config() -> None:
    tree = {"task": "chat", "train": {"lr": 1e-4, "early_stopping": {"patience": None}},
            "trackers": ["tensorboard"], "data": {"columns": {}}}
    assert flatten(tree) == {"task": "chat", "train.lr": 1e-4,
                             "train.early_stopping.patience": None,
                             "trackers": ["tensorboard"], "data.columns": {}}
    flat = tracker_config(tree)  # what TensorBoard's hparams accept: scalars only
    assert flat == {"task": "chat", "train.lr": 1e-4, "trackers": '["tensorboard"]',
                    "data.columns": "{}"}
