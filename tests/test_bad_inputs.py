"""The bad-input corpus under tests/data/bad/: every case exits with code 2 and one line.

Each case runs the real CLI (`finetunekit train`) in-process and checks the message names what is
wrong and where, that no traceback is printed, and that no run directory was left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from finetunekit.cli import main

BAD = Path(__file__).parent / "data" / "bad"
TEXT = BAD / "text"

# (file, split it is used as, text the one-line message must contain)
DATA_CASES = [
    ("broken_json.jsonl", "train", "broken_json.jsonl:3: not valid JSON"),
    ("array_line.jsonl", "train", "array_line.jsonl:4: expected a JSON object, got list"),
    ("string_line.jsonl", "train", "string_line.jsonl:2: expected a JSON object, got str"),
    ("missing_text.jsonl", "train", "missing_text.jsonl:3: field 'review': missing"),
    ("missing_label.jsonl", "train", "missing_label.jsonl:5: field 'score': missing"),
    ("empty_text.jsonl", "train", "empty_text.jsonl:2: field 'review': empty text"),
    ("blank_text.jsonl", "train", "blank_text.jsonl:3: field 'review': empty text"),
    ("text_number.jsonl", "train", "text_number.jsonl:4: field 'review': expected text, got int"),
    ("text_null.jsonl", "train", "text_null.jsonl:4: field 'review': expected text, got NoneType"),
    ("text_object.jsonl", "train", "text_object.jsonl:4: field 'review': expected text, got dict"),
    ("text_nan.jsonl", "train", "text_nan.jsonl:3: field 'review': expected text, got float"),
    ("label_list.jsonl", "train", "label_list.jsonl:3: field 'score': expected one label, got a list"),
    ("label_null.jsonl", "train", "label_null.jsonl:3: field 'score': missing label"),
    ("label_empty.jsonl", "train", "label_empty.jsonl:3: field 'score': empty label"),
    ("label_float.jsonl", "train", "label_float.jsonl:3: field 'score': expected a label"),
    ("unseen_label_test.jsonl", "test",
     "unseen_label_test.jsonl:3: field 'score': label 'meh' does not occur in the training split"),
    ("latin1.jsonl", "train", "latin1.jsonl:3: not UTF-8 text"),
    ("utf16.jsonl", "train", "utf16.jsonl:1: not UTF-8 text"),
    ("empty.jsonl", "train", "empty.jsonl: the file is empty"),
    ("only_blank_lines.jsonl", "train", "only_blank_lines.jsonl: no usable rows"),
    ("notes.txt", "train", "notes.txt: unsupported file type '.txt'"),
    ("no_such_file.jsonl", "train", "no_such_file.jsonl: data file not found"),
    ("no_such_file.jsonl", "test", "no_such_file.jsonl: data file not found"),
    ("wrong_field_count.csv", "train", "wrong_field_count.csv:3: expected 2 comma-separated"),
    ("missing_column.csv", "train", "missing_column.csv:2: field 'review': missing"),
    ("empty_text.csv", "train", "empty_text.csv:3: field 'review': empty text"),
    ("header_only.csv", "train", "header_only.csv: no usable rows"),
    ("bad_quote.csv", "train", "bad_quote.csv"),
    ("corrupt.parquet", "train", "corrupt.parquet: not a readable Parquet file"),
    ("missing_column.parquet", "train", "missing_column.parquet:1: field 'review': missing"),
    ("text_int.parquet", "train", "text_int.parquet:1: field 'review': expected text, got int"),
    ("text_null.parquet", "train", "text_null.parquet:2: field 'review': expected text"),
]

CONFIG_CASES = [
    ("unknown_top_key.yaml", "unknown key 'epochs' (allowed: task, model"),
    ("unknown_data_key.yaml", "unknown key 'data.labels' (allowed: train, validation"),
    ("unknown_train_key.yaml", "unknown key 'train.learning_rate'"),
    ("bad_task.yaml", "'task' = 'sentiment': Input should be 'chat'"),
    ("negative_lr.yaml", "'train.lr' = -0.001: Input should be greater than 0"),
    ("zero_batch.yaml", "'train.batch_size' = 0: Input should be greater than 0"),
    ("fraction_out_of_range.yaml", "'data.validation' = 1.5: a fraction must be between 0 and 1"),
    ("bad_scheduler.yaml", "'train.scheduler' = 'exponential'"),
    ("bad_precision.yaml", "'train.precision' = 'fp8'"),
    ("bad_peft_method.yaml", "'peft.method' = 'qlora'"),
    ("patience_zero.yaml", "'train.early_stopping.patience' = 0"),
    ("lr_not_a_number.yaml", "'train.lr' = 'fast'"),
    ("yaml_syntax.yaml", "yaml_syntax.yaml:2: not valid YAML"),
    ("list_not_mapping.yaml", "expected a mapping of keys"),
    ("missing_model.yaml", "missing required key 'model'"),
    ("missing_data.yaml", "missing required key 'data'"),
    ("unknown_builtin.yaml", "'builtin:gpt-5' is not a built-in model (available: minilm"),
    ("model_folder_not_hf.yaml", "has no config.json (not a Hugging Face folder)"),
    ("model_path_missing.yaml", "model './no/such/model/folder': no such folder"),
    ("fp16_on_cpu.yaml", "train.precision: fp16 needs a GPU"),
    ("no_eval_split.yaml", "no held-out rows to evaluate on"),
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert expected in err, err


def data_config(tmp_path: Path, file: str, split: str) -> Path:
    data = {"train": str(TEXT / "good_test.jsonl"), "test": str(TEXT / "good_test.jsonl"),
            "validation": None, "columns": {"text": "review", "label": "score"}}
    data[split] = str(TEXT / file)
    raw = {"task": "text-classification", "model": "builtin:minilm", "data": data,
           "output": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("file, split, expected", DATA_CASES, ids=[f"{c[1]}-{c[0]}" for c in DATA_CASES])
def test_bad_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, split: str,
                       expected: str) -> None:
    code, err = run_cli(["train", str(data_config(tmp_path, file, split))], capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("file, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                    file: str, expected: str) -> None:
    if file == "fp16_on_cpu.yaml" and torch.cuda.is_available():
        pytest.skip("a GPU takes fp16")
    monkeypatch.chdir(tmp_path)  # any run directory would appear here
    code, err = run_cli(["train", str(BAD / "configs" / file)], capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "runs").exists()


def test_set_without_equals(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", str(BAD / "configs" / "negative_lr.yaml"), "--set", "train.lr"], capsys)
    assert_one_line_error(code, err, "--set 'train.lr': expected KEY=VALUE")


def test_huge_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"review": "x" * (9 * 2**20), "score": "great"}) + "\n")
    config = data_config(tmp_path, str(huge), "train")
    code, err = run_cli(["train", str(config)], capsys)
    assert_one_line_error(code, err, "huge.jsonl:1: line is 9 MB long (limit 8 MB)")


def test_corpus_size() -> None:
    """The issue asks for at least 40 malformed inputs; images and audio add theirs elsewhere."""
    files = {c[0] for c in DATA_CASES} | {c[0] for c in CONFIG_CASES}
    assert len(DATA_CASES) + len(CONFIG_CASES) + 2 >= 40
    for name in files - {"no_such_file.jsonl"}:
        assert (TEXT / name).exists() or (BAD / "configs" / name).exists(), name


@pytest.mark.parametrize("file", ["bom_ok.jsonl", "bom_ok.csv"])
def test_utf8_bom_is_accepted(file: str) -> None:
    from finetunekit.data.readers import read_table, require_text

    table = read_table(TEXT / file, {"text": "review"},
                       lambda r: {"text": require_text(r, "text"), "label": r["score"]})
    assert table.rows[0]["text"].startswith("fresh")
    assert table.rows[0]["_where"].endswith(f"{file}:2" if file.endswith("csv") else f"{file}:1")


def test_skip_bad_rows_counts_and_reports(tmp_path: Path, tiny_bert: Path) -> None:
    """With data.skip_bad_rows the bad rows are skipped, counted and listed in data/report.json."""
    from finetunekit import config as config_mod
    from finetunekit.data.checks import data_report
    from finetunekit.run import read_splits
    from finetunekit.tasks import get_task

    cfg = config_mod.validate({
        "task": "text-classification", "model": str(tiny_bert),
        "data": {"train": str(TEXT / "empty_text.jsonl"), "test": str(TEXT / "unseen_label_test.jsonl"),
                 "validation": None, "skip_bad_rows": True,
                 "columns": {"text": "review", "label": "score"}},
    })
    task = get_task(cfg)
    splits, tables = read_splits(cfg, task)
    assert len(splits["train"]) == 6 and len(splits["test"]) == 2
    report = data_report(splits, tables, task.row_key, task.row_length, task.row_label)
    assert any("empty_text.jsonl:2" in b for b in report["bad_rows"])
    assert any("bad rows skipped" in w for w in report["warnings"])


def test_output_under_a_file_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = data_config(tmp_path, "good_test.jsonl", "train")
    code, err = run_cli(["train", str(config), "--set", f"output={blocker / 'run'}"], capsys)
    assert_one_line_error(code, err, "is a file, so the folder cannot be made")
    code, err = run_cli(["train", str(config), "--set", f"output={blocker}"], capsys)
    assert_one_line_error(code, err, "exists and is not a folder")


def test_preflight_refuses_too_little_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from finetunekit import run as run_mod
    from finetunekit.errors import UserError

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_mod.shutil, "disk_usage",
                        lambda _: usage._replace(free=10 * 2**20))
    with pytest.raises(UserError, match="not enough free disk") as err:
        run_mod.preflight(tmp_path / "run", n_params=50_000_000, n_trainable=50_000_000, keep=2)
    assert "GB needed" in str(err.value) and "keep_checkpoints" in str(err.value)
    run_mod.preflight(tmp_path / "ok", n_params=1000, n_trainable=1000, keep=2)  # 10 MiB is plenty
