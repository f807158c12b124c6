"""The input side both audio tasks share: a row's clip checked and fingerprinted, and the
model's sampling rate held against `audio.sampling_rate`.

Why a mixin: audio classification is a `ClassificationTask` and speech recognition a plain
`Task`, but a clip is read, checked and keyed the same way in both; only the other fields of a
row (a label, a transcript) differ, and each task says those in `_fields`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..data.audio import audio_input_row
from ..errors import UserError


class AudioInput:
    """Mix in before the task's base class; the task defines `_fields(row)` (its non-audio
    fields, checked) and calls `_use_sampling_rate` once its feature extractor is loaded."""

    cfg: Any
    rate: int
    _column: Callable[[str], str]  # Task's, reached through the MRO

    def _fields(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Rows from any table-shaped source: the task's fields and a readable clip."""
        return audio_input_row(row, self._column("audio"), self.cfg.audio.max_seconds,
                               self._fields)

    def row_key(self, row: dict[str, Any]) -> Hashable:
        """Duplicates and train/test leakage are the same audio, whatever the file is called."""
        return row["fingerprint"]

    def _use_sampling_rate(self, rate: int) -> None:
        """Clips are resampled to the extractor's rate; a config that names another is wrong."""
        self.rate = int(rate)
        wanted = self.cfg.audio.sampling_rate
        if wanted is not None and wanted != self.rate:
            raise UserError(f"audio.sampling_rate: the model's feature extractor expects "
                            f"{self.rate} Hz, not {wanted} (clips are resampled to it)")
