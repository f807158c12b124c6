"""Build examples/data/real-speech/: 10 real English utterances for ASR smoke tests.

Why: the synthetic espeak sets show that training moves WER, but only real recordings show that
a converted Whisper checkpoint actually hears speech. Debian's `pocketsphinx-testdata` (BSD-2)
ships 10 short 16 kHz recordings with transcripts; we copy them as FLAC so that nobody needs apt
to run the tests.

Usage: python scripts/make_real_speech.py [--source DIR] [--out DIR]
  --source  an extracted package root (`dpkg -x pocketsphinx-testdata_*.deb DIR`); without it the
            script runs `apt-get download` and `dpkg -x` in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

PACKAGE = "pocketsphinx-testdata"
DATA = Path("usr/share/pocketsphinx/test/data")
RATE = 16000
# (sub-folder, transcript file, prefix for our file names)
SETS = [("librivox", "transcription", "librivox"), ("cards", "cards.transcription", "cards")]
LINE = re.compile(r"^\s*(?:<s>)?(?P<text>.*?)(?:</s>)?\s*\((?P<id>[^)]+)\)\s*$")

PROVENANCE = """# real-speech: 10 real English recordings

Source: Debian package `{package}` version {version}
(files under `{data}/`),
the test data of CMU PocketSphinx (https://cmusphinx.github.io/).
License: BSD-2-Clause, Copyright 1995-2014 Carnegie Mellon University,
2014-2015 Alpha Cephei Inc. (see the package's `usr/share/doc/{package}/copyright`).
The `librivox-*` clips are from the LibriVox public-domain reading of Jane Austen's
*Sense and Sensibility*; the `cards-*` clips are spoken playing-card names.

Made by `scripts/make_real_speech.py`: each WAV is resampled to 16 kHz mono if needed (they
already are) and written as FLAC; `clips.jsonl` holds `{{"audio", "text"}}` with the transcript
exactly as the package's `transcription` / `cards.transcription` give it, minus the `<s>` /
`</s>` markers and the utterance id (lower-case words, no punctuation). The transcripts are the
package's own, including its quirks (e.g. "a more a amiable woman" in librivox-0920).

Too small to train on: use it for smoke tests and sanity checks of pretrained ASR models.
"""


def fetch(tmp: Path) -> tuple[Path, str]:
    """Download and unpack the .deb without installing it (no root, no side effects)."""
    subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
    deb = next(tmp.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], check=True)
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return tmp / "root", version


def read_transcripts(path: Path) -> dict[str, str]:
    """Map utterance id to its lower-case words."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        match = LINE.match(raw)
        if match is None:
            raise ValueError(f"{path}: cannot parse line {raw!r}")
        out[match["id"]] = " ".join(match["text"].lower().split())
    return out


def to_flac(src: Path, dest: Path) -> float:
    """Write `src` as 16 kHz mono 16-bit FLAC; return its duration in seconds."""
    audio, rate = sf.read(src, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE)
    sf.write(dest, np.clip(audio, -1.0, 1.0), RATE, format="FLAC", subtype="PCM_16")
    return len(audio) / RATE


def build(root: Path, version: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], 0.0
    for folder, transcript, prefix in SETS:
        texts = read_transcripts(root / DATA / folder / transcript)
        for utt, text in texts.items():
            wav = root / DATA / folder / f"{utt}.wav"
            name = f"{prefix}-{utt.rsplit('-', 1)[-1]}.flac"
            seconds += to_flac(wav, out / name)
            rows.append({"audio": name, "text": text})
    with (out / "clips.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "PROVENANCE.md").write_text(
        PROVENANCE.format(package=PACKAGE, version=version, data=DATA), encoding="utf-8"
    )
    print(f"wrote {len(rows)} clips ({seconds:.1f} s of audio) to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="extracted package root")
    parser.add_argument("--version", default="unknown", help="package version, with --source")
    parser.add_argument("--out", type=Path, default=Path("examples/data/real-speech"))
    args = parser.parse_args()
    if args.source:
        build(args.source, args.version, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root, version = fetch(Path(tmp))
        build(root, version, args.out)


if __name__ == "__main__":
    main()
