"""Audio datasets: a table with an audio path column (paths relative to the data file), or a
folder layout `<dir>/<label>/*.wav` for classification.

Every clip is fully decoded once at read time, so a zero-byte, truncated, non-audio, silent-empty
or too-long file fails before any model is loaded, with the file named, instead of crashing a
batch later. Decoding uses `soundfile` (libsndfile: WAV, FLAC, OGG/Vorbis, MP3), so no ffmpeg is
needed; channels are averaged to mono and the rate is converted with `soxr` (a band-limited
resampler: naive interpolation would alias high frequencies into the speech band).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .paths import read_media_table
from .readers import WHERE, BadRow, RowError, Table

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Convert mono float32 `samples` from `rate` to `target` Hz (soxr, high quality)."""
    if rate == target:
        return samples
    import soxr

    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: Path, sampling_rate: int | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a clip to mono float32 in [-1, 1]; resampled to `sampling_rate` when given.

    Returns (samples, rate). RowError('audio', why) for missing, empty, unreadable, zero-length
    or too-long clips, the message starting with the path.
    """
    import soundfile as sf

    try:
        if path.stat().st_size == 0:
            raise RowError("audio", f"{path}: the file is empty (0 bytes)")
        info = sf.info(str(path))
        if max_seconds is not None and info.frames > max_seconds * info.samplerate:
            raise RowError("audio", f"{path}: {info.frames / info.samplerate:.1f} s long, more than "
                           f"audio.max_seconds = {max_seconds:g}")
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RowError:
        raise
    except FileNotFoundError:
        raise RowError("audio", f"{path}: no such file") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RowError("audio", f"{path}: not a readable audio file (WAV, FLAC, OGG, MP3): "
                       f"{reason}") from None
    if data.shape[0] == 0:
        raise RowError("audio", f"{path}: the clip has no samples (0 s long)")
    if not np.isfinite(data).all():
        raise RowError("audio", f"{path}: the clip contains NaN or infinite samples")
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if sampling_rate is not None and rate != sampling_rate:
        samples, rate = resample(samples, rate, sampling_rate), sampling_rate
    return samples, rate


def audio_fingerprint(samples: np.ndarray, rate: int) -> str:
    """Hash of the decoded samples: the same clip saved twice (or as WAV and FLAC) is a duplicate."""
    quantized = np.round(samples * 32767).astype(np.int16)
    digest = hashlib.sha1(f"{rate}:{len(samples)}".encode())
    digest.update(quantized.tobytes())
    return digest.hexdigest()


def audio_row(path: Path, max_seconds: float, where: str, **fields: Any) -> dict[str, Any]:
    """A checked row: the clip decodes, and its duration and fingerprint are recorded."""
    samples, rate = load_audio(path, max_seconds=max_seconds)
    return {"audio": str(path), **fields, "seconds": round(len(samples) / rate, 3),
            "fingerprint": audio_fingerprint(samples, rate), WHERE: where}


def audio_input_row(row: dict[str, Any], column: str, max_seconds: float,
                    check_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """A task's `check_row` for audio: the row names a readable clip (path as given, not
    relative to a data file), and `check_fields` accepts its other fields."""
    path = row.get("audio")
    if not isinstance(path, str) or not path.strip():
        raise RowError(column, "expected an audio file path")
    return audio_row(Path(path), max_seconds, "", **check_fields(row))


def read_audio_table(
    path: Path,
    columns: dict[str, str],
    check_fields: Callable[[dict[str, Any]], dict[str, Any]],
    max_seconds: float,
    skip_bad_rows: bool,
    max_rows: int | None,
    display: str,
) -> Table:
    """Read a JSONL / CSV / Parquet file whose audio column holds paths relative to the file.

    `check_fields` validates the other fields (transcript or label) and returns them cleaned.
    """
    return read_media_table(
        path, columns, "audio", "an audio file path", check_fields,
        lambda audio_path, fields: audio_row(audio_path, max_seconds, "", **fields),
        skip_bad_rows, max_rows, display,
    )


def read_audio_folder(root: Path, display: str, max_seconds: float, skip_bad_rows: bool,
                      max_rows: int | None) -> Table:
    """Read `<root>/<label>/*.<audio>`: the folder name is the label (interleaved across labels,
    so `data.max_rows` takes a class-balanced subset)."""
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise UserError(f"{display}: expected one sub-folder per label ({display}/<label>/*.wav), "
                        "found none")
    per_label = [
        [p for p in sorted(folder.rglob("*"))
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS]
        for folder in label_dirs
    ]
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    for i in range(max((len(files) for files in per_label), default=0)):
        for folder, files in zip(label_dirs, per_label, strict=True):
            if i >= len(files) or (max_rows is not None and len(rows) >= max_rows):
                continue
            where = f"{display}/{files[i].relative_to(root).as_posix()}"
            try:
                rows.append(audio_row(files[i], max_seconds, where, label=folder.name))
            except RowError as err:
                problem = BadRow(where, None, err.message.removeprefix(f"{files[i]}: "))
                if not skip_bad_rows:
                    raise UserError(str(problem)) from None
                bad.append(problem)
    if not rows:
        first = f" ({len(bad)} bad, first: {bad[0]})" if bad else ""
        raise UserError(f"{display}: no readable audio files "
                        f"({', '.join(sorted(AUDIO_EXTENSIONS))}){first}")
    return Table(display, rows, bad)
