"""A split from several files: `data.train` (and validation / test) as a path, a glob or a list.

Users who mix sources (as with Axolotl's or LLaMA-Factory's dataset lists) give each file under
one key; the rows are read in turn into one split, each row keeping its own file and line for
errors, duplicates and leakage, and data/report.json lists what every file brought.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetunekit import config as config_mod
from finetunekit.cli import main
from finetunekit.data.checks import data_report
from finetunekit.errors import UserError
from finetunekit.run import read_splits
from finetunekit.tasks import get_task

COLUMNS = {"text": "review", "label": "score"}


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"review": t, "score": y}) + "\n" for t, y in rows))
    return path


def text_cfg(base: Path, **data: object) -> config_mod.Config:
    raw = {"task": "text-classification", "model": "unused",
           "data": {"validation": None, "columns": COLUMNS, **data}}
    return config_mod.validate(raw, base_dir=str(base))


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "b.jsonl", [("b one", "good"), ("b two", "bad")])
    write_jsonl(tmp_path / "data" / "a.jsonl", [("a one", "good"), ("a two", "bad"), ("a 3", "bad")])
    (tmp_path / "data" / "c.csv").write_text("review,score\nc one,good\nb one,good\n")
    write_jsonl(tmp_path / "held" / "test.jsonl", [("a one", "good"), ("fresh", "bad")])
    return tmp_path


def test_a_glob_is_expanded_sorted_and_shown_relative_like_the_pattern(sources: Path):
    cfg = text_cfg(sources, train="data/*.jsonl")
    assert [(f.path, f.shown) for f in cfg.data_files("train")] == [
        (sources / "data" / "a.jsonl", "data/a.jsonl"), (sources / "data" / "b.jsonl", "data/b.jsonl")]
    absolute = text_cfg(sources, train=str(sources / "data" / "[bc].*"))
    assert [f.shown for f in absolute.data_files("train")] == [
        str(sources / "data" / "b.jsonl"), str(sources / "data" / "c.csv")]


def test_a_list_mixes_formats_into_one_split_and_the_report_lists_each_file(sources: Path):
    cfg = text_cfg(sources, train=["data/c.csv", "data/*.jsonl"], test="held/test.jsonl")
    task = get_task(cfg)
    splits, tables = read_splits(cfg, task)
    assert [r["text"] for r in splits["train"]] == [
        "c one", "b one", "a one", "a two", "a 3", "b one", "b two"]
    assert [t.path for t in tables] == [
        "data/c.csv", "data/a.jsonl", "data/b.jsonl", "held/test.jsonl"]
    report = data_report(splits, tables, task.row_key, task.row_length, task.row_label)
    assert report["files"][0] == {"file": "data/c.csv", "rows": 2, "bad_rows": 0}
    assert report["splits"]["train"]["exact_duplicates"] == 1  # "b one" in c.csv and b.jsonl
    assert report["splits"]["test"]["also_in_train"] == 1
    # both places of a repeat, so a user mixing sources sees which ones overlap
    assert "train: 1 exact duplicate rows, e.g. data/c.csv:3 = data/b.jsonl:1" in report["warnings"]
    assert any("leakage), e.g. held/test.jsonl:1 = train data/a.jsonl:1" in w
               for w in report["warnings"])


def test_max_rows_caps_the_whole_split_not_each_file(sources: Path):
    cfg = text_cfg(sources, train="data/*.jsonl", max_rows=4)
    splits, _ = read_splits(cfg, get_task(cfg))
    assert [r["text"] for r in splits["train"]] == ["a one", "a two", "a 3", "b one"]


def test_a_bad_row_in_the_second_file_names_that_file_and_line(sources: Path):
    (sources / "data" / "z.jsonl").write_text('{"review": "ok", "score": "good"}\n{"review": ""'
                                              ', "score": "bad"}\n')
    cfg = text_cfg(sources, train=["data/a.jsonl", "data/z.jsonl"])
    with pytest.raises(UserError, match=r"^data/z.jsonl:2: field 'review': empty text"):
        read_splits(cfg, get_task(cfg))


def test_a_glob_matching_nothing_and_an_empty_list_are_one_line_errors(sources: Path):
    cfg = text_cfg(sources, train=["data/a.jsonl", "data/*.parquet"])
    with pytest.raises(UserError, match=r"data.train: 'data/\*.parquet' matches no file \(relative"):
        cfg.data_files("train")
    with pytest.raises(UserError, match="data.test.*an empty list names no file"):
        text_cfg(sources, train="data/a.jsonl", test=[])


def test_the_resolved_config_keeps_every_entry_absolute(sources: Path):
    cfg = text_cfg(sources, train=["data/a.jsonl", "data/*.jsonl"])
    saved = yaml.safe_load(config_mod.to_yaml(cfg))["data"]["train"]
    assert saved == [str(sources / "data" / "a.jsonl"), str(sources / "data" / "*.jsonl")]
    again = config_mod.validate({**yaml.safe_load(config_mod.to_yaml(cfg))}, base_dir="/")
    assert [f.path for f in again.data_files("train")] == [
        sources / "data" / "a.jsonl", sources / "data" / "a.jsonl", sources / "data" / "b.jsonl"]


def test_check_verb_reads_a_list_given_with_set(sources: Path, capsys: pytest.CaptureFixture[str]):
    config = sources / "job.yaml"
    config.write_text(yaml.safe_dump({"task": "text-classification", "model": "unused",
                                      "data": {"train": "data/a.jsonl", "validation": None,
                                               "columns": COLUMNS}}))
    code = main(["check", str(config), "--set", "data.train=[data/a.jsonl, data/c.csv]"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["train"]["rows"] == 5
    assert [f["file"] for f in report["files"]] == ["data/a.jsonl", "data/c.csv"]


def test_recommendation_refuses_several_interaction_logs(tmp_path: Path):
    cfg = config_mod.validate({"task": "recommendation", "model": "unused",
                               "data": {"train": ["a.csv", "b.csv"], "items": "items.csv"}},
                              base_dir=str(tmp_path))
    with pytest.raises(UserError, match="data.train: recommendation reads one interaction log"):
        get_task(cfg).split([])


def test_chat_mixes_files_of_different_layouts(tmp_path: Path):
    (tmp_path / "msgs.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    (tmp_path / "pc.csv").write_text("prompt,completion\n2+2?,4\n")
    (tmp_path / "alpaca.jsonl").write_text(json.dumps(
        {"instruction": "Say yes", "input": "", "output": "yes"}) + "\n")
    cfg = config_mod.validate({"task": "chat", "model": "unused", "data": {
        "train": ["msgs.jsonl", "pc.csv", "alpaca.jsonl"], "validation": None}},
        base_dir=str(tmp_path))
    splits, tables = read_splits(cfg, get_task(cfg))
    assert len(splits["train"]) == 3 and len(tables) == 3
    assert [r["kind"] for r in splits["train"]] == ["messages", "completion", "messages"]


def test_resume_fingerprint_holds_the_files_a_glob_matched(sources: Path):
    """A file dropped into a globbed folder changes the rows, so a resume must see it."""
    from finetunekit.run import fingerprint

    plain = fingerprint(text_cfg(sources, train="data/a.jsonl"))
    assert not any(key.endswith(".files") for key in plain)  # older checkpoints still resume
    globbed = text_cfg(sources, train="data/*.jsonl")
    before = fingerprint(globbed)
    assert before["data.train.files"] == ["data/a.jsonl", "data/b.jsonl"]
    write_jsonl(sources / "data" / "new.jsonl", [("new", "good")])
    assert fingerprint(globbed)["data.train.files"] == [
        "data/a.jsonl", "data/b.jsonl", "data/new.jsonl"]


def test_an_entry_may_map_its_own_columns_over_data_columns(sources: Path):
    """Mixed sources rarely agree on column names; errors name each file's own column."""
    (sources / "other.csv").write_text("body,score\nother one,good\nother two,bad\n")
    cfg = text_cfg(sources, train=["data/a.jsonl",
                                   {"path": "other.csv", "columns": {"text": "body"}}])
    task = get_task(cfg)
    splits, _ = read_splits(cfg, task)
    assert [r["text"] for r in splits["train"]][-2:] == ["other one", "other two"]
    assert [r["label"] for r in splits["train"]][-2:] == ["good", "bad"]  # `score` from data.columns
    assert task.columns == COLUMNS  # back to data.columns once the file is read
    (sources / "broken.csv").write_text("body,score\nfine,good\n,bad\n")
    broken = text_cfg(sources, train=["data/a.jsonl",
                                      {"path": "broken.csv", "columns": {"text": "body"}}])
    with pytest.raises(UserError, match=r"^broken.csv:3: field 'body': empty text"):
        read_splits(broken, get_task(broken))
    unmapped = text_cfg(sources, train=["data/a.jsonl", "other.csv"])
    with pytest.raises(UserError, match=r"^other.csv:2: field 'review': missing"):
        read_splits(unmapped, get_task(unmapped))


def test_an_entry_with_own_columns_resumes_and_saves_as_written(sources: Path):
    from finetunekit.run import fingerprint

    entry = {"path": "data/b.jsonl", "columns": {"text": "review"}}
    cfg = text_cfg(sources, train=["data/a.jsonl", entry])
    fp = fingerprint(cfg)
    assert fp["data.train"] == ["data/a.jsonl", entry]
    assert json.loads(json.dumps(fp)) == fp  # state.json holds it as written
    saved = yaml.safe_load(config_mod.to_yaml(cfg))["data"]["train"]
    assert saved[1] == {"path": str(sources / "data" / "b.jsonl"), "columns": {"text": "review"}}
    with pytest.raises(UserError, match=r"'data.train' = .*: entry 1: missing required key 'path'"):
        text_cfg(sources, train=["data/a.jsonl", {"columns": {"text": "body"}}])


def test_an_unseen_label_in_a_mapped_test_file_names_that_file_s_column(sources: Path):
    (sources / "held" / "other.csv").write_text("text,verdict\nfine,good\nodd,meh\n")
    cfg = text_cfg(sources, train="data/*.jsonl", validation=0.2, test=[
        "held/test.jsonl", {"path": "held/other.csv", "columns": {"text": "text", "label": "verdict"}}])
    with pytest.raises(UserError, match=r"^held/other.csv:3: field 'verdict': label 'meh' does not"):
        read_splits(cfg, get_task(cfg))
    cfg.data.skip_bad_rows = True
    splits, _ = read_splits(cfg, get_task(cfg))
    assert [r["text"] for r in splits["test"]] == ["a one", "fresh", "fine"]


def test_repeats_without_a_recorded_place_are_still_counted():
    rows = [{"text": "same"}, {"text": "same"}, {"text": "other"}]
    report = data_report({"train": rows, "test": [{"text": "same"}]}, [], lambda r: r["text"],
                         lambda r: 1)
    assert report["warnings"] == ["train: 1 exact duplicate rows",
                                  "test: 1 rows also appear in train (leakage), e.g. ? = train ?"]
