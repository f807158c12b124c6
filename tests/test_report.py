"""report.html: every image it references exists, user text is escaped, overfitting is flagged."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_runs import HOSTILE, healthy_metrics, make_run, overfit_metrics

from finetunekit.errors import UserError
from finetunekit.evaluate.curves import detect_overfitting, series
from finetunekit.evaluate.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    """Collects tags and their attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def images(page: str) -> list[str]:
    return [str(a["src"]) for t, a in parse(page).tags if t == "img"]


# --- the page ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One healthy run's directory and report page, shared (plotting takes seconds)."""
    run = make_run(tmp_path_factory.mktemp("healthy") / "run", healthy_metrics(),
                   after_accuracy=0.85)
    path = write_report(run)
    assert path == run / "report.html"
    return run, path.read_text(encoding="utf-8")


def test_report_references_only_existing_pngs(healthy: tuple[Path, str]) -> None:
    run, page = healthy
    srcs = images(page)
    for expected in ("loss", "eval_metrics", "lr", "throughput", "confusion_before",
                     "confusion_after"):
        assert f"plots/{expected}.png" in srcs
    for src in srcs:
        assert not src.startswith(("/", "http:", "https:", "file:")), src  # opens from disk
        file = run / src
        assert file.is_file(), src
        assert file.read_bytes()[:8] == PNG, src
    assert "could not be rendered" not in page


def test_report_escapes_user_text_and_has_no_scripts(healthy: tuple[Path, str]) -> None:
    page = healthy[1]
    assert HOSTILE not in page
    assert "<script" not in page.lower()  # static page: no JS at all, ours or injected
    assert "<b>bold</b>" not in page
    tags = parse(page)
    assert not any(t == "script" for t, _ in tags.tags)
    text = "".join(tags.text)
    assert text.count(HOSTILE) >= 4  # config, data warning, label names, predictions: as text


def test_report_content(healthy: tuple[Path, str]) -> None:
    page = healthy[1]
    text = "".join(parse(page).text)
    assert "+0.3500" in text  # accuracy change before -> after
    assert "lr: 0.0001" in text  # the resolved config
    assert "exact duplicate rows" in text  # data warning
    assert "precision" in text and "support" in text  # per-class table
    assert "test.jsonl:1" in text  # where an example came from
    assert "data/reviews-a.jsonl" in text and "&quot;files&quot;" not in page  # a table
    rows = [a for t, a in parse(page).tags if t == "tr"]
    assert rows  # tables rendered
    shown = sum(1 for i in range(14) if f"review {i} " in text)
    assert shown == 10  # ten example predictions


def test_report_of_unfinished_run(tmp_path: Path) -> None:
    """A crashed or running run still gets a page: sections say what is missing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: text-classification\nmodel: x\n")
    (run / "run.json").write_text(json.dumps({"status": "running", "task": "text-classification"}))
    page = write_report(run).read_text(encoding="utf-8")
    assert images(page) == []
    assert "not complete" in page
    assert "No predictions yet" in page
    assert "could not be rendered" not in page


def test_generic_details_render_by_shape(tmp_path: Path) -> None:
    """Details of tasks the report does not know (WER per example, ranking) still show."""
    run = make_run(tmp_path / "run", healthy_metrics(), with_details=False)
    per_example = [{"reference": f"ref {i}", "hypothesis": f"hyp {i}", "wer": i / 20}
                   for i in range(25)]
    (run / "eval" / "after_details.json").write_text(json.dumps({
        "per_example": per_example,
        "ranking": {"hr@10": 0.4, "ndcg@10": 0.25},
        "wer_by_length": [0.1, 0.2, 0.3],
        "note": "greedy decoding",
        "extra_eval": {"file": "real/clips.jsonl", "examples": 12, "predictions": per_example[:12]},
    }))
    page = write_report(run).read_text(encoding="utf-8")
    assert "could not be rendered" not in page
    assert "plots/per_example_wer_after.png" in images(page)
    # records nested in a mapping get their own table and histogram, not a JSON dump
    assert "plots/extra_eval_predictions_wer_after.png" in images(page)
    assert "real/clips.jsonl" in page and "&quot;reference&quot;" not in page
    assert "plots/wer_by_length_after.png" in images(page)
    assert "ndcg@10" in page and "greedy decoding" in page
    assert "5 more rows not shown" in page
    for src in images(page):
        assert (run / src).is_file()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        write_report(tmp_path)


# --- overfitting ------------------------------------------------------------------------------
def test_overfitting_run_is_flagged(tmp_path: Path) -> None:
    lines = overfit_metrics()
    found = detect_overfitting(series(lines, "loss"), series(lines, "eval_loss"))
    assert found is not None
    assert found.best_step == 15
    assert found.val_last > found.val_best and found.train_last < found.train_at_best
    page = write_report(make_run(tmp_path / "run", lines)).read_text(encoding="utf-8")
    assert "possible overfitting" in page


def test_healthy_run_is_not_flagged(healthy: tuple[Path, str]) -> None:
    lines = healthy_metrics()
    assert detect_overfitting(series(lines, "loss"), series(lines, "eval_loss")) is None
    assert "possible overfitting" not in healthy[1]


@pytest.mark.parametrize(
    ("train", "val"),
    [
        # one noisy evaluation after the minimum is not a trend
        ([(1, 1.0), (5, 0.5), (10, 0.3)], [(5, 0.6), (10, 0.5), (15, 0.4), (20, 0.6)]),
        # validation rises but training loss rises too: divergence, not overfitting
        ([(1, 0.3), (10, 0.5), (20, 0.9)], [(5, 0.5), (10, 0.6), (15, 0.7), (20, 0.9)]),
        # a rise smaller than min_rise (5%) is noise
        ([(1, 1.0), (10, 0.5), (20, 0.2)], [(5, 0.50), (10, 0.49), (15, 0.50), (20, 0.505)]),
        # too few evaluations to tell
        ([(1, 1.0), (10, 0.5)], [(5, 0.5), (10, 0.9)]),
    ],
)
def test_overfitting_needs_a_real_trend(train: list, val: list) -> None:
    assert detect_overfitting(train, val) is None


def test_overfitting_is_flagged_when_validation_climbs_after_the_minimum() -> None:
    train = [(s, 1.0 / s) for s in range(1, 31)]
    val = [(5, 0.7), (10, 0.5), (15, 0.55), (20, 0.62), (25, 0.7), (30, 0.8)]
    found = detect_overfitting(train, val)
    assert found is not None and found.best_step == 10
    assert "step 10" in found.message()
