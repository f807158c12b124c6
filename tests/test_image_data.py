"""Image readers: both layouts, every image format we promise, and every bad-image case.

The bad files are committed under tests/data/bad/images/ (zero bytes, a PNG and a JPEG cut in
half, a text file and an HTML page with image names); each must stop the run with one line that
names the file (and the line, for a JSONL table), or be counted with `data.skip_bad_rows`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import image_config, shape_image, write_folder, write_jsonl
from PIL import Image

from finetunekit.data.images import load_image, to_rgb
from finetunekit.errors import UserError
from finetunekit.run import read_splits
from finetunekit.tasks.image_classification import ImageClassification

BAD = Path(__file__).parent / "data" / "bad" / "images"
BAD_CASES = [
    ("zero_byte.png", "the file is empty (0 bytes)"),
    ("truncated.png", "unreadable or truncated image"),
    ("truncated.jpg", "unreadable or truncated image"),
    ("not_an_image.png", "not an image PIL can read"),
    ("html_as.jpg", "not an image PIL can read"),
]


def _task(tmp_path: Path, train: Path, test: Path | None = None, **data) -> ImageClassification:
    cfg = image_config("unused", str(train), str(test) if test else None, tmp_path / "run")
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return ImageClassification(cfg)


def test_folder_layout_labels_from_folder_names(tmp_path: Path):
    root = write_folder(tmp_path / "train", per_label=3)
    (root / "square" / "notes.txt").write_text("ignored: not an image extension")
    table = _task(tmp_path, root).read(root, display="train")
    assert len(table.rows) == 6
    assert {r["label"] for r in table.rows} == {"square", "stripes"}
    row = table.rows[0]
    assert row["_where"].startswith("train/") and row["_where"].endswith(".png")
    assert (row["width"], row["height"]) == (24, 24)


def test_folder_max_rows_is_class_balanced(tmp_path: Path):
    root = write_folder(tmp_path / "train", per_label=5)
    table = _task(tmp_path, root, max_rows=4).read(root, display="train")
    assert sorted(r["label"] for r in table.rows) == ["square", "square", "stripes", "stripes"]


def test_folder_without_label_subfolders_is_a_user_error(tmp_path: Path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shape_image("square", 0).save(flat / "a.png")
    with pytest.raises(UserError, match=r"flat: expected one sub-folder per label"):
        _task(tmp_path, flat).read(flat, display="flat")


def test_jsonl_and_csv_layouts_with_column_mapping(tmp_path: Path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = []
    for i, label in enumerate(["square", "stripes", "square"]):
        shape_image(label, i).save(data / "img" / f"{i}.png")
        rows.append({"file": f"img/{i}.png", "kind": label})
    jsonl = write_jsonl(data / "train.jsonl", rows)
    csv = data / "train.csv"
    csv.write_text("file,kind\n" + "".join(f"{r['file']},{r['kind']}\n" for r in rows))
    for path, line in ((jsonl, 2), (csv, 3)):  # the CSV header is line 1
        task = _task(tmp_path, path, columns={"image": "file", "label": "kind"})
        table = task.read(path, display=path.name)
        assert [r["label"] for r in table.rows] == ["square", "stripes", "square"]
        assert table.rows[1]["_where"] == f"{path.name}:{line}"
        assert Path(table.rows[1]["image"]).resolve() == (data / "img" / "1.png").resolve()


@pytest.mark.parametrize("name,expected", BAD_CASES)
def test_bad_image_in_folder_names_the_file(tmp_path: Path, name: str, expected: str):
    root = write_folder(tmp_path / "train", per_label=2)
    shutil.copy(BAD / name, root / "square" / name)
    with pytest.raises(UserError) as err:
        _task(tmp_path, root).read(root, display="train")
    message = str(err.value)
    assert message.startswith(f"train/square/{name}:"), message
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("name,expected", BAD_CASES)
def test_bad_image_in_jsonl_names_line_field_and_file(tmp_path: Path, name: str, expected: str):
    data = tmp_path / "data"
    write_folder(data / "img", per_label=1)
    shutil.copy(BAD / name, data / "img" / name)
    path = write_jsonl(data / "train.jsonl", [
        {"picture": "img/square/000.png", "label": "square"},
        {"picture": f"img/{name}", "label": "stripes"},
    ])
    task = _task(tmp_path, path, columns={"image": "picture"})
    with pytest.raises(UserError) as err:
        task.read(path, display="train.jsonl")
    message = str(err.value)
    assert message.startswith("train.jsonl:2: field 'picture':"), message
    assert name in message and expected in message


def test_skip_bad_rows_counts_every_bad_image(tmp_path: Path):
    root = write_folder(tmp_path / "train", per_label=3)
    for name, _ in BAD_CASES:
        shutil.copy(BAD / name, root / "stripes" / name)
    table = _task(tmp_path, root, skip_bad_rows=True).read(root, display="train")
    assert len(table.rows) == 6
    assert len(table.bad_rows) == len(BAD_CASES)
    assert {Path(b.where).name for b in table.bad_rows} == {n for n, _ in BAD_CASES}


@pytest.mark.parametrize("path", ["../outside.png", "img/../../outside.png", "/etc/passwd"])
def test_paths_escaping_the_dataset_folder_are_refused(tmp_path: Path, path: str):
    data = tmp_path / "data"
    write_folder(data / "img", per_label=1)
    shape_image("square", 9).save(tmp_path / "outside.png")  # exists, but outside `data/`
    jsonl = write_jsonl(data / "train.jsonl", [
        {"image": "img/square/000.png", "label": "square"}, {"image": path, "label": "square"},
    ])
    with pytest.raises(UserError, match=r"train.jsonl:2: field 'image': .* points outside"):
        _task(tmp_path, jsonl).read(jsonl, display="train.jsonl")


def test_missing_image_file_and_missing_column(tmp_path: Path):
    data = tmp_path / "data"
    write_folder(data / "img", per_label=1)
    missing = write_jsonl(data / "a.jsonl", [{"image": "img/nope.png", "label": "x"}])
    with pytest.raises(UserError, match=r"a.jsonl:1: field 'image': .*nope.png: no such file"):
        _task(tmp_path, missing).read(missing, display="a.jsonl")
    no_column = write_jsonl(data / "b.jsonl", [{"path": "img/square/000.png", "label": "x"}])
    with pytest.raises(UserError, match=r"b.jsonl:1: field 'image': expected an image path"):
        _task(tmp_path, no_column).read(no_column, display="b.jsonl")


def test_unknown_label_in_test_split_is_refused(tmp_path: Path):
    train = write_folder(tmp_path / "train", per_label=2)
    test = write_folder(tmp_path / "test", per_label=1)
    (test / "circle").mkdir()
    shape_image("square", 7).save(test / "circle" / "000.png")
    task = _task(tmp_path, train, test)
    with pytest.raises(UserError, match=r"test/circle/000.png: field 'label': label 'circle' "
                                        r"does not occur in the training split"):
        read_splits(task.cfg, task)
    task.cfg.data.skip_bad_rows = True
    splits, _ = read_splits(task.cfg, task)
    assert len(splits["test"]) == 2 and all(r["label"] != "circle" for r in splits["test"])


# --- formats ------------------------------------------------------------------------------
def test_formats_are_decoded_to_8bit_rgb(tmp_path: Path):
    gray = np.full((8, 8), 100, dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.webp", lossless=True)
    for name in ("gray.png", "rgb.jpg", "rgb.webp"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (8, 8), name
        assert abs(int(np.asarray(image)[4, 4, 0]) - 100) <= 2, name


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255, 4]


def test_rgba_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red
    rgba[1, 1] = [0, 0, 0, 0]  # fully transparent black: shows the white background
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]
