"""Trackers through Accelerate: TensorBoard writes its event file only when enabled.

Off by default, nothing is written (and nothing could leave the machine); `trackers:
[tensorboard]` writes RUN/tensorboard/NAME/events.out.tfevents.* with the training metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finetunekit.run import train


def _short(cfg, output: Path, trackers: list[str]):
    cfg.output = str(output)
    cfg.trackers = trackers
    cfg.train.max_steps = 4
    cfg.train.eval_every = 2
    cfg.train.log_every = 1
    return cfg


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_tensorboard_event_file_when_enabled(tiny_config, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "with-tb"
    train(_short(tiny_config, out, ["tensorboard"]), progress=False)
    files = _event_files(out)
    assert files, "no TensorBoard event file written"
    assert all(f.is_relative_to(out / "tensorboard") for f in files)
    tags: set[str] = set()
    steps: dict[str, list[int]] = {}
    for f in files:
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags.add(tag)
            steps[tag] = [e.step for e in acc.Scalars(tag)]
    assert {"loss", "lr", "eval_accuracy", "eval_loss"} <= tags
    assert steps["loss"] == [1, 2, 3, 4]
    assert steps["eval_accuracy"] == [2, 4]


def test_nothing_written_when_disabled(tiny_config, tmp_path: Path) -> None:
    out = tmp_path / "without"
    assert tiny_config.trackers == []  # off by default
    train(_short(tiny_config, out, []), progress=False)
    assert (out / "metrics.jsonl").is_file()  # the run itself happened
    assert _event_files(out) == []
    assert not (out / "tensorboard").exists()
