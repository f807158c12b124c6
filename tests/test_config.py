"""Config loading: unknown keys and bad values name the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finetunekit import config as config_mod
from finetunekit.errors import UserError

BASE = {"task": "text-classification", "model": "builtin:minilm", "data": {"train": "t.jsonl"}}


def write(tmp_path: Path, raw: dict | str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE))
    assert cfg.train.lr == 5e-5 and cfg.data.validation == 0.1 and cfg.peft.method == "none"
    resolved = yaml.safe_load(config_mod.to_yaml(cfg))
    assert resolved["train"]["early_stopping"]["patience"] == 3
    assert "base_dir" not in resolved


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE))
    assert cfg.path("t.jsonl") == tmp_path / "t.jsonl"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"data": {"train": "t", "bogus": 1}}, "unknown key 'data.bogus' (allowed: train, validation"),
        ({"taks": "chat"}, "unknown key 'taks'"),
        ({"task": "summarize"}, "'task' = 'summarize': Input should be 'chat'"),
        ({"train": {"lr": -1}}, "'train.lr' = -1: Input should be greater than 0"),
        ({"train": {"scheduler": "step"}}, "'train.scheduler' = 'step': Input should be 'linear'"),
        ({"data": {"train": "t", "validation": 1.5}}, "between 0 and 1"),
        ({"peft": {"method": "qlora"}}, "'peft.method' = 'qlora'"),
        ({"train": {"shuffle": False, "packing": True}},
         "'train.packing' = True: packing fills rows longest first"),
        ({"train": {"label_smoothing": 1.0}}, "'train.label_smoothing' = 1.0: Input should be less"),
        ({"task": "chat", "train": {"label_smoothing": 0.1}},
         "'train.label_smoothing' = 0.1: applies to text-classification, image-classification, "
         "audio-classification, not to chat"),
        ({"peft": {"dora": "yes please"}}, "'peft.dora' = 'yes please'"),
        ({"task": "recommendation", "train": {"class_weights": "balanced"}},
         "'train.class_weights' = 'balanced': applies to text-classification"),
        ({"train": {"class_weights": "inverse"}}, "'train.class_weights' = 'inverse'"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(UserError, match=None) as err:
        config_mod.load(write(tmp_path, {**BASE, **change}))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing required key 'model'"):
        config_mod.load(write(tmp_path, {"task": "chat", "data": {"train": "x"}}))


def test_overrides(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE), ["train.lr=3e-5", "output=runs/x",
                                                   "peft.target=[q_proj, v_proj]"])
    assert cfg.train.lr == 3e-5 and cfg.output == "runs/x"
    assert cfg.peft.target == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        config_mod.load(write(tmp_path, BASE), ["train.lr"])
    with pytest.raises(UserError, match="'train.epochs' = 'many'"):
        config_mod.load(write(tmp_path, BASE), ["train.epochs=many"])


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"c.yaml:2: not valid YAML"):
        config_mod.load(write(tmp_path, "task: chat\nmodel: x: y\ndata: {}\n"))


def test_missing_file_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        config_mod.load(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="expected a mapping"):
        config_mod.load(write(tmp_path, "- a\n- b\n"))
