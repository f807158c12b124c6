"""Paths inside a dataset: media files (images, audio) are named relative to the data file.

Shared by the image and audio readers so both refuse the same escapes: a row saying
`../../etc/passwd` or an absolute path must not make us read files outside the dataset folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def inside(path: Path, root: Path) -> bool:
    """Lexical containment: `..` or an absolute path cannot leave the dataset folder."""
    path_n, root_n = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return path_n == root_n or path_n.startswith(root_n.rstrip(os.sep) + os.sep)
