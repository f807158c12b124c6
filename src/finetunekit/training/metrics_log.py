"""`metrics.jsonl`: one JSON object per logged step or evaluation, appended and flushed.

On resume, lines after the checkpoint's step are dropped so the file shows one continuous curve,
exactly as an uninterrupted run would have written it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True, trackers: Any = None) -> None:
        self.path = path
        self.enabled = enabled
        self.trackers = trackers  # an Accelerator with init_trackers() done, or None

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(clean) + "\n")
        if self.trackers is not None:
            numbers = {k: v for k, v in clean.items()
                       if isinstance(v, int | float) and k != "step" and v is not None}
            self.trackers.log(numbers, step=int(record.get("step", 0)))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
