"""Readers for JSONL, CSV and Parquet that keep the file and line of every row.

Errors name the file, the line (or row, for Parquet) and the field, so a user can open the file
at the right place. Rows come out as plain dicts keyed by *our* field names after the column
mapping, plus `_where` ("file:line") for later messages and reports.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

WHERE = "_where"
MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is almost surely not one JSONL record
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
           ".tsv": "tsv", ".parquet": "parquet"}


class RowError(Exception):
    """A row does not fit what the task needs; carries the field and what was expected."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class BadRow:
    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        field = f" field '{self.field}':" if self.field else ""
        return f"{self.where}:{field} {self.message}"


@dataclass
class Table:
    """Rows of one split plus the rows that were skipped (with `data.skip_bad_rows`)."""

    path: str
    rows: list[dict[str, Any]]
    bad_rows: list[BadRow] = field(default_factory=list)


def _decode_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) with a clear error for non-UTF-8 bytes; a BOM is accepted."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(
                    f"{path}:{number}: line is {len(raw) / 2**20:.0f} MB long (limit "
                    f"{MAX_LINE_BYTES // 2**20} MB); expected one JSON object per line"
                )
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}:{number}: not UTF-8 text (byte {err.start + 1} of the line); "
                    "save the file as UTF-8"
                ) from None
            yield number, text


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    for number, text in _decode_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield number, RowError(None, f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(obj, dict):
            yield number, RowError(None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield number, obj


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict | Exception]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield reader.line_num, RowError(
                None, f"expected {len(header)} comma-separated fields, found {len(values)}"
            )
            continue
        yield reader.line_num, dict(zip(header, values, strict=True))


def _parquet_records(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    yield from enumerate(table.to_pylist(), start=1)


def iter_records(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    """Yield (line or row number, record or RowError) from a JSONL / CSV / TSV / Parquet file."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"{path}: unsupported file type '{path.suffix}' (expected .jsonl, .csv, .tsv or .parquet)"
        )
    if kind == "jsonl":
        return _jsonl_records(path)
    if kind in ("csv", "tsv"):
        return _csv_records(path, "," if kind == "csv" else "\t")
    return _parquet_records(path)


def read_table(
    path: Path,
    columns: dict[str, str],
    check_row: Callable[[dict[str, Any]], dict[str, Any]],
    skip_bad_rows: bool = False,
    max_rows: int | None = None,
    display: str | None = None,
) -> Table:
    """Read a file, rename columns to our field names and validate each row with `check_row`.

    `columns` maps our field name to the file's column name. `check_row` receives the renamed
    record and returns the cleaned row, or raises RowError. Without `skip_bad_rows` the first bad
    row is a UserError naming file, line and field; with it, bad rows are collected and skipped.
    """
    name = display or str(path)
    if not path.is_file():
        raise UserError(f"{name}: data file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{name}: the file is empty")
    reverse = {source: ours for ours, source in columns.items()}
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    for number, record in iter_records(path):
        where = f"{name}:{number}"
        try:
            if isinstance(record, Exception):
                raise record
            # a file column named like one of our mapped fields is not that field
            renamed = {reverse.get(k, k): v for k, v in record.items()
                       if k in reverse or k not in columns}
            row = check_row(renamed)
        except RowError as err:
            problem = BadRow(where, err.field, err.message)
            if not skip_bad_rows:
                raise UserError(str(problem)) from None
            bad.append(problem)
            continue
        row[WHERE] = where
        rows.append(row)
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        detail = f" ({len(bad)} bad rows skipped, first: {bad[0]})" if bad else ""
        raise UserError(f"{name}: no usable rows{detail}")
    return Table(name, rows, bad)


def require_text(row: dict[str, Any], field: str, column: str | None = None) -> str:
    """A non-empty string field; names the file's column in the message when it was mapped."""
    label = column or field
    if field not in row:
        raise RowError(label, "missing (check data.columns)")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(label, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(label, "empty text")
    return value
