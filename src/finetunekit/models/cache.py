"""The cache of converted built-in models (one Hugging Face folder per model).

Conversion writes into a temporary folder beside the target and renames it into place, so an
interrupted conversion never leaves a folder that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """`$FINETUNEKIT_CACHE`, else `$XDG_CACHE_HOME/finetunekit`, else `~/.cache/finetunekit`."""
    if env := os.environ.get("FINETUNEKIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "finetunekit"


def cached_folder(name: str, build) -> Path:
    """Return the cached folder for `name`, building it with `build(tmp_dir)` on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        build(tmp)
        if target.exists():  # a half-written leftover from an older version of this code
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
