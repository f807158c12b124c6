"""The two-tower recommender on a tiny random BERT: loss, cache, save / reload, the whole run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetunekit import config as config_mod
from finetunekit.run import evaluate_run, load_run, predict, read_splits, train
from finetunekit.tasks import get_task

BAD = Path(__file__).parent / "data" / "bad" / "recommendation"
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}


@pytest.fixture()
def tiny_model(tiny_bert: Path) -> Path:
    """conftest's random 2-layer BERT with the MiniLM tokenizer (no download, seconds to train)."""
    return tiny_bert


def make_cfg(model: Path, output: Path | None = None, **rec: object):
    raw = {"task": "recommendation", "model": str(model),
           "data": {"train": "good.csv", "items": "items.csv", "columns": COLUMNS},
           "recommendation": {"sampled_negatives": 4, "k": 3, **rec},
           "train": {"batch_size": 2, "max_length": 16, "num_threads": 1, "lr": 1e-3},
           "output": str(output or "unused")}
    return config_mod.validate(raw, base_dir=str(BAD))


def loaded(cfg):
    task = get_task(cfg)
    splits, _ = read_splits(cfg, task)
    model = task.load(str(cfg.model), splits["train"])
    return task, splits, model


def test_loss_masks_known_positives_and_trains(tiny_model: Path):
    task, splits, model = loaded(make_cfg(tiny_model, hard_negatives=True))
    examples = task.encode(splits["train"], training=True)
    # user 1 trains on item 2 after item 1 (item 3 was rated 2); user 2 on item 4 after item 3;
    # user 3 has a single training positive: no pair
    assert sorted((e["where"], e["target"]) for e in examples) == [
        ("good.csv:3", 1), ("good.csv:8", 3)]
    assert all(len(e["hard"]) > 0 and not set(e["hard"]) & e["positives"] for e in examples)
    batch = task.collate(examples)
    n_cand = 2 + 4 + 2  # in-batch targets, sampled, one hard negative per example
    assert batch["blocked"].shape == (2, n_cand) and batch["candidates"].shape == (n_cand,)
    assert not batch["blocked"].diagonal().any()  # a target is never masked for its own user
    # the same user twice: neither may treat the other's target (its own positive) as negative
    twice = task.collate([examples[0], dict(examples[0], where="copy")])
    assert twice["blocked"][0, 1] and twice["blocked"][1, 0]
    assert torch.equal(task.collate(examples)["candidates"], batch["candidates"])  # seeded
    before = task.item_embeddings(model).clone()
    assert task.item_embeddings(model) is task._cache[1]  # cached while weights are unchanged
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = task.loss(model, batch)
        assert math.isfinite(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.allclose(task.item_embeddings(model), before)  # cache follows the weights


def test_save_reload_same_top_k(tiny_model: Path, tmp_path: Path):
    task, splits, model = loaded(make_cfg(tiny_model))
    with torch.no_grad():
        for p in model.parameters():  # move away from the initial weights
            p.add_(0.01 * torch.randn_like(p))
    expected = task.predict(model, ["1", "2", "3"])
    for user, result in zip(("1", "2", "3"), expected, strict=True):
        shown = {x["item"] for x in result["items"]}
        assert len(result["items"]) == 3 and not shown & set(task.users[user]["seen"])
    assert expected[0]["items"][0]["title"] in {"Toy Story", "Jumanji", "Heat", "Casino",
                                                 "Sabrina", "GoldenEye", "Babe", "Se7en"}
    task.save(model, tmp_path / "model")
    saved = load_file(str(tmp_path / "model" / "item_index.safetensors"))["embeddings"]
    assert saved.shape == (8, 32)
    assert json.loads((tmp_path / "model" / "items.json").read_text())["ids"][:2] == ["1", "2"]

    fresh = get_task(make_cfg(tiny_model))
    reloaded = fresh.load_tuned(tmp_path / "model")
    assert fresh.predict(reloaded, ["1", "2", "3"]) == expected
    fresh._cache = None  # the index matches what the saved encoder computes
    assert torch.allclose(fresh.item_embeddings(reloaded), saved, atol=1e-5)
    with pytest.raises(Exception, match="unknown user id '77'"):
        fresh.predict(reloaded, ["77"])


def test_full_run_writes_before_after_and_predicts(tiny_model: Path, tmp_path: Path):
    cfg = make_cfg(tiny_model, output=tmp_path / "run")
    cfg.train.max_steps = 2
    run = train(cfg, progress=False)
    for result in (run.before, run.after):
        assert {"hr@3", "ndcg@3", "mrr", "coverage@3", "popularity_ndcg@3",
                "cold_ndcg@3"} <= set(result)
        assert 0.0 <= result["ndcg@3"] <= 1.0
    details = json.loads((run.dir / "eval" / "after_details.json").read_text())
    assert details["rows"] == 3 and details["cold_start"]["rows"] == 2
    assert run.status["metric"] == "ndcg@3"
    out = predict(run.dir, ["2"], k=2)
    assert [len(x["items"]) for x in out] == [2]
    assert {x["item"] for x in out[0]["items"]}.isdisjoint({"3", "4", "6", "8"})
    _, _, task, model = load_run(run.dir)
    assert task.predict(model, ["2"])[0]["items"][:2] == out[0]["items"]
    # `finetunekit eval RUN --data LOG`: a raw log is split by time, ranked with the saved index
    result = evaluate_run(run.dir, str(BAD / "good.csv"))
    assert result.metrics["ndcg@3"] == pytest.approx(run.after["ndcg@3"])
    shutil.rmtree(run.dir / "checkpoints")


def test_popularity_prior_weight_auto_fixed_and_saved(tiny_model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    """The prior re-ranks by popularity when text says nothing; "auto" fits it on validation
    rows (the smallest weight that ranks best); a saved model keeps its weight and counts."""
    task, splits, model = loaded(make_cfg(tiny_model))
    rows = splits["test"]
    n = len(task.catalogue)
    monkeypatch.setattr(task, "item_embeddings", lambda m: torch.ones(n, 4) / 2)  # all tied
    targets = [task.catalogue.index[r["item"]] for r in rows]
    task.popularity = torch.zeros(n)
    task.popularity[targets] = 50.0  # the held-out items are the most popular ones

    task.validation_rows = []
    assert task.prior_weight(task.item_embeddings(model)) == 0.0  # auto without validation
    text = task.evaluate(model, rows, text_only=True)
    task.validation_rows = rows
    assert task.prior_weight(task.item_embeddings(model)) == 0.005  # smallest that ranks best
    tuned = task.evaluate(model, rows)
    assert tuned.details["popularity_weight"] == 0.005
    assert tuned.metrics["ndcg@3"] == pytest.approx(tuned.metrics["popularity_ndcg@3"])
    assert tuned.metrics["ndcg@3"] > text.metrics["ndcg@3"]
    assert tuned.details["text_only"]["ndcg@3"] == pytest.approx(text.metrics["ndcg@3"])
    gain = tuned.details["gain_over_popularity"]
    assert gain["ndcg@3_gain"] == pytest.approx(0.0) and gain["users"] == len(rows)

    fixed = get_task(make_cfg(tiny_model, popularity_weight=0.2))
    fixed.popularity = task.popularity
    assert fixed.prior_weight(torch.ones(n, 4)) == 0.2

    monkeypatch.undo()
    task.save(model, tmp_path / "model")
    settings = json.loads((tmp_path / "model" / "recommender.json").read_text())
    assert settings["popularity_weight"] == task.prior_weight(task.item_embeddings(model))
    fresh = get_task(make_cfg(tiny_model))
    fresh.load_tuned(tmp_path / "model")
    assert fresh.saved_weight == settings["popularity_weight"]
    assert torch.equal(fresh.popularity, task.popularity)


def test_negative_popularity_weight_is_refused(tiny_model: Path):
    with pytest.raises(Exception, match="popularity_weight"):
        make_cfg(tiny_model, popularity_weight=-0.1)


def test_user_vector_weights_recent_items_more(tiny_model: Path):
    task = get_task(make_cfg(tiny_model, recency_decay=0.5, history_length=3))
    task.catalogue = type("C", (), {"index": {"a": 0, "b": 1, "c": 2, "d": 3}})()
    items = torch.eye(4)
    user = task.user_vectors(items, [["d", "a", "b", "c"]])[0]  # "d" is beyond history_length
    expected = torch.tensor([0.25, 0.5, 1.0, 0.0])
    assert torch.allclose(user, expected / expected.norm())
    plain = get_task(make_cfg(tiny_model, recency_decay=1.0, history_length=3))
    plain.catalogue = task.catalogue
    assert torch.allclose(plain.user_vectors(items, [["a", "b", "c"]])[0],
                          torch.tensor([1.0, 1.0, 1.0, 0.0]) / 3 ** 0.5)


def test_logq_correction_subtracts_log_expected_sampling_count(tiny_model: Path):
    """Each candidate's logit loses log(B * popularity share + sampled / catalogue size)."""
    task, splits, model = loaded(make_cfg(tiny_model, logq_correction=True))
    examples = task.encode(splits["train"], training=True)
    assert task.popularity is not None and task.catalogue is not None
    task.popularity = torch.arange(1.0, len(task.catalogue) + 1)  # unequal, so it changes ranks
    batch = task.collate(examples)
    share = task.popularity / task.popularity.sum()
    n = len(task.catalogue)
    candidates = [e["target"] for e in examples]  # the in-batch part comes first
    expected = [math.log(len(examples) * float(share[c]) + 4 / n) for c in candidates]
    assert batch["candidate_logq"][: len(candidates)].tolist() == pytest.approx(expected)
    with torch.no_grad():
        corrected = task.loss(model, batch)
        plain = task.loss(model, {k: v for k, v in batch.items() if k != "candidate_logq"})
    assert not torch.isclose(corrected, plain)
    task_off, splits_off, _ = loaded(make_cfg(tiny_model, logq_correction=False))
    assert "candidate_logq" not in task_off.collate(task_off.encode(splits_off["train"], True))
