"""Paths inside a dataset: media files (images, audio) are named relative to the data file.

Shared by the image and audio readers so both read tables of media paths the same way and
refuse the same escapes: a row saying `../../etc/passwd` or an absolute path must not make us
read files outside the dataset folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .readers import RowError, Table, read_table


def inside(path: Path, root: Path) -> bool:
    """Lexical containment: `..` or an absolute path cannot leave the dataset folder."""
    path_n, root_n = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return path_n == root_n or path_n.startswith(root_n.rstrip(os.sep) + os.sep)


def read_media_table(
    path: Path,
    columns: dict[str, str],
    field: str,
    what: str,
    check_fields: Callable[[dict[str, Any]], dict[str, Any]],
    load: Callable[[Path, dict[str, Any]], dict[str, Any]],
    skip_bad_rows: bool,
    max_rows: int | None,
    display: str,
) -> Table:
    """Read a JSONL / CSV / Parquet file whose `field` column names media files relative to it.

    `check_fields` validates the row's other fields (label, transcript) and returns them cleaned;
    `load(media_path, fields)` decodes the file into the checked row. A file that will not
    decode is reported against the media column, under the user's name for it.
    """
    root = path.parent
    column = columns.get(field, field)

    def check(row: dict[str, Any]) -> dict[str, Any]:
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise RowError(column, f"expected {what} (relative to the data file)")
        fields = check_fields(row)
        media_path = root / value.strip()
        if not inside(media_path, root):
            raise RowError(column, f"{value!r} points outside the dataset folder {root}")
        try:
            return load(media_path, fields)
        except RowError as err:
            raise RowError(column, err.message) from None

    return read_table(path, columns, check, skip_bad_rows=skip_bad_rows, max_rows=max_rows,
                      display=display)
