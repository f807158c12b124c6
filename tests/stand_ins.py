"""Built-in models the tests read only the tokenizer of, and what stands in for them.

Where a weights package is not installed (a GPU machine the checks are carried to), an
environment variable may name a folder holding that model's tokenizer and config, which is all
such tests read; scripts/gpu_checks.sh's header says how the folders are made."""

from __future__ import annotations

import importlib.util
import os


def tokenizer_source(package: str, variable: str, builtin: str) -> str | None:
    """`builtin` when its weights package is installed, else the folder named by `variable`,
    else None (the test skips)."""
    if importlib.util.find_spec(package) is not None:
        return builtin
    return os.environ.get(variable) or None
