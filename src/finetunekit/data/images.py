"""Image datasets: folder layout (`<dir>/<label>/*.png`) or a table with an image path column.

Every image is fully decoded once at read time, so a zero-byte, truncated or non-image file fails
before any model is loaded, with the file named, instead of crashing a batch hours into training.
Images are normalised to 8-bit RGB here (grayscale, palette, RGBA over white, 16-bit scaled down,
EXIF rotation applied): every image processor accepts that, whatever the source format was.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import UserError
from .paths import read_media_table
from .readers import WHERE, BadRow, RowError, Table

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, the one format every image processor takes.

    16-bit and 32-bit grayscale are scaled by their range (PIL's own convert would clip them to
    255, i.e. turn most of the picture white); transparency is composited over white rather than
    dropped, because the colour under a transparent pixel is arbitrary.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
            array = array / 257.0
        elif mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        gray = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB; RowError('image', why) when it cannot be read."""
    try:
        if path.stat().st_size == 0:
            raise RowError("image", f"{path}: the file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except RowError:
        raise
    except FileNotFoundError:
        raise RowError("image", f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise RowError("image", f"{path}: not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RowError("image", f"{path}: too many pixels (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err) or type(err).__name__
        raise RowError("image", f"{path}: unreadable or truncated image ({reason})") from None


def image_fingerprint(image: Image.Image) -> str:
    """Hash of the decoded pixels: the same picture saved twice (or re-encoded) is a duplicate."""
    digest = hashlib.sha1(f"{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def image_row(path: Path, label: str, where: str) -> dict[str, Any]:
    """A checked row: the image decodes, and its size and fingerprint are recorded."""
    image = load_image(path)
    return {"image": str(path), "label": label, "width": image.width, "height": image.height,
            "fingerprint": image_fingerprint(image), WHERE: where}


def _folder_files(root: Path, display: str) -> list[tuple[Path, str, str]]:
    """(path, label, display path) for `<root>/<label>/<file>`, interleaved across labels.

    Interleaving makes `data.max_rows` take a class-balanced subset instead of the first classes.
    """
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise UserError(f"{display}: expected one sub-folder per label ({display}/<label>/*.png), "
                        "found none")
    per_label = []
    for folder in label_dirs:
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        per_label.append([(p, folder.name, f"{display}/{p.relative_to(root).as_posix()}")
                          for p in files])
    interleaved = []
    for i in range(max(len(f) for f in per_label)):
        interleaved.extend(files[i] for files in per_label if i < len(files))
    if not interleaved:
        raise UserError(f"{display}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                        "in its label sub-folders")
    return interleaved


def read_image_folder(root: Path, display: str, skip_bad_rows: bool,
                      max_rows: int | None) -> Table:
    """Read `<root>/<label>/*.<image>`: the folder name is the label."""
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    for path, label, where in _folder_files(root, display):
        try:
            rows.append(image_row(path, label, where))
        except RowError as err:
            problem = BadRow(where, None, err.message.removeprefix(f"{path}: "))
            if not skip_bad_rows:
                raise UserError(str(problem)) from None
            bad.append(problem)
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        raise UserError(f"{display}: no readable images ({len(bad)} bad, first: {bad[0]})")
    return Table(display, rows, bad)


def read_image_table(
    path: Path,
    columns: dict[str, str],
    check_label: Callable[[dict[str, Any]], str],
    skip_bad_rows: bool,
    max_rows: int | None,
    display: str,
) -> Table:
    """Read a JSONL / CSV / Parquet file whose image column holds paths relative to the file."""
    return read_media_table(
        path, columns, "image", "an image path", lambda row: {"label": check_label(row)},
        lambda image_path, fields: image_row(image_path, fields["label"], ""),
        skip_bad_rows, max_rows, display,
    )
