"""User-facing errors.

A `UserError` is something the user can fix (bad config, bad data row, missing package). The CLI
prints its message on one line and exits with code 2, without a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; the message names what is wrong and where."""


def where(file: str | None, line: int | None = None, field: str | None = None) -> str:
    """Format a location as `file:line field 'x'` for error messages."""
    parts = []
    if file:
        parts.append(f"{file}:{line}" if line is not None else str(file))
    if field:
        parts.append(f"field '{field}'")
    return " ".join(parts)
