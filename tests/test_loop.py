"""The training loop on a tiny model: accumulation, early stopping, best restore, loss guard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from finetunekit.config import TrainConfig
from finetunekit.training.batching import EpochBatchSampler, PackedBatchSampler, pack_best_fit
from finetunekit.training.loop import Diverged, Objective, TrainData, train_loop
from finetunekit.training.metrics_log import MetricsLog


def make_data(n: int = 64, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = x @ torch.arange(1.0, 7.0) + 0.1 * torch.randn(n, generator=gen)
    return [{"x": x[i], "y": y[i], "where": f"toy:{i + 1}"} for i in range(n)]


@pytest.fixture(autouse=True)
def cpu_accelerator_state():
    """These tests run the loop on CPU, where its arithmetic is exact. Accelerate's process-wide
    state refuses `cpu=True` once an earlier test in the same process set it up on a GPU, so it
    is cleared around each test here."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def collate(examples: list[dict]) -> dict:
    return {"x": torch.stack([e["x"] for e in examples]), "y": torch.stack([e["y"] for e in examples]),
            "num_items": len(examples), "_where": [e["where"] for e in examples]}


def mse_sum(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum()


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def run(tmp_path: Path, examples: list[dict], cfg: TrainConfig, loss_fn=mse_sum, **kwargs):
    model = make_model()
    sampler = EpochBatchSampler([1] * len(examples), cfg.batch_size, cfg.seed,
                                group_by_length=cfg.group_by_length)
    result = train_loop(model, TrainData(examples, sampler, collate), loss_fn, cfg, Accelerator(cpu=True),
                        tmp_path / "checkpoints", MetricsLog(tmp_path / "metrics.jsonl"),
                        progress=False, **kwargs)
    return model, result


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulation_matches_a_big_batch(tmp_path: Path) -> None:
    data = make_data()
    common = dict(epochs=2, lr=1e-2, seed=3, group_by_length=False, warmup_ratio=0.0, log_every=1)
    big, _ = run(tmp_path / "a", data, TrainConfig(batch_size=16, grad_accum=1, **common))
    small, _ = run(tmp_path / "b", data, TrainConfig(batch_size=4, grad_accum=4, **common))
    assert torch.allclose(flat(big), flat(small), atol=1e-6)


def test_accumulation_weights_by_items_not_micro_batches(tmp_path: Path) -> None:
    """An uneven last window (10 examples = 4 + 4 + 2) still averages over examples."""
    data = make_data(10)
    common = dict(epochs=1, lr=1e-2, seed=3, group_by_length=False, warmup_ratio=0.0,
                  max_grad_norm=None)
    big, _ = run(tmp_path / "a", data, TrainConfig(batch_size=10, grad_accum=1, **common))
    small, _ = run(tmp_path / "b", data, TrainConfig(batch_size=4, grad_accum=3, **common))
    assert torch.allclose(flat(big), flat(small), atol=1e-6)


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95, 0.99])
    snapshots: list[torch.Tensor] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        snapshots.append(flat(model).clone())
        return {"accuracy": next(scores)}

    cfg = TrainConfig(epochs=50, batch_size=16, eval_every=2, lr=1e-2, log_every=1)
    model, result = run(tmp_path, make_data(), cfg, evaluate_fn=evaluate,
                        objective=Objective("accuracy", "max", patience=2))
    assert result.stopped_early and len(snapshots) == 4  # stops after two evals without gain
    assert result.best_step == 4 and result.best_metric == 0.9
    assert torch.equal(flat(model), snapshots[1])
    evals = [r for r in MetricsLog(tmp_path / "metrics.jsonl").read() if "eval_accuracy" in r]
    assert [r["eval_accuracy"] for r in evals] == [0.5, 0.9, 0.7, 0.6]


def test_min_mode_and_min_delta() -> None:
    objective = Objective("loss", "min", patience=1, min_delta=0.1)
    assert objective.better(1.0, None)
    assert not objective.better(0.95, 1.0)
    assert objective.better(0.85, 1.0)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    calls = {"n": 0}

    def sometimes_nan(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        calls["n"] += 1
        loss = mse_sum(model, batch)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, max_bad_steps=3, log_every=1)
    model, result = run(tmp_path, make_data(), cfg, loss_fn=sometimes_nan)
    assert result.skipped_steps == 2 and result.steps == 8
    assert all(math.isfinite(v) for v in flat(model).tolist())


def test_divergence_stops_and_names_the_rows(tmp_path: Path) -> None:
    def always_inf(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return mse_sum(model, batch) * float("inf")

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, max_bad_steps=3)
    with pytest.raises(Diverged, match=r"3 steps in a row had a non-finite loss.*toy:\d+"):
        run(tmp_path, make_data(), cfg, loss_fn=always_inf)


def test_length_grouped_batches_cover_every_example_once() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(200)]
    sampler = EpochBatchSampler(lengths, 8, seed=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        flat_ids = sorted(i for b in sampler.batches() for i in b)
        assert flat_ids == list(range(200))
    sampler.set_epoch(0)
    first = sampler.batches()
    sampler.set_epoch(1)
    assert sampler.batches() != first
    sampler.set_epoch(0)
    assert sampler.batches() == first  # deterministic per (seed, epoch): what resume relies on
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    random_order = EpochBatchSampler(lengths, 8, seed=1, group_by_length=False).batches()
    padded_random = sum(len(b) * max(lengths[i] for i in b) for b in random_order)
    assert padded < 0.8 * padded_random


def test_the_costliest_batch_comes_first_in_every_epoch() -> None:
    """A batch too big for the device must fail in step 1 (as HF's LengthGroupedSampler does),
    and moving it there must not lose or repeat an example."""
    lengths = [(i * 37) % 101 + 1 for i in range(300)]
    grouped = EpochBatchSampler(lengths, 8, seed=3)
    packed = PackedBatchSampler(lengths, 128, 4, seed=3)
    for epoch in range(3):
        grouped.set_epoch(epoch)
        batches = grouped.batches()
        cost = [len(b) * max(lengths[i] for i in b) for b in batches]
        assert cost[0] == max(cost) and cost.index(max(cost)) == 0
        assert sorted(i for b in batches for i in b) == list(range(300))
        packed.set_epoch(epoch)
        rows = packed.batches()
        width = [len(b) * max(sum(lengths[i] for i in r) for r in b) for b in rows]
        assert width[0] == max(width)
        assert sorted(i for b in rows for r in b for i in r) == list(range(300))
    # still a deterministic function of (seed, epoch): what exact resume relies on
    grouped.set_epoch(0)
    first = grouped.batches()
    assert first == grouped.batches()
    assert len(first) == math.ceil(300 / 8)


def test_best_fit_packing_keeps_examples_whole() -> None:
    lengths = [5, 9, 3, 7, 2, 8, 1, 10, 4]
    rows = pack_best_fit(lengths, 10, list(range(len(lengths))))
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == math.ceil(sum(lengths) / 10)  # this instance packs perfectly
