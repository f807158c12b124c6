"""One synthesized speech clip, as the audio data builders (cards-asr, commands) make them.

Why one place: both sets must come out of the same pipeline (espeak-ng, then sox to 16 kHz mono
with the silence trimmed at both ends, 12 significant bits, 50 ms of padding), so that a change to
it regenerates both the same way. Needs Debian `espeak-ng` and `sox`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
PAD = 800  # samples of silence on each side: 50 ms at 16 kHz
TRIM = ["silence", "1", "0.02", "0.1%", "reverse", "silence", "1", "0.02", "0.1%", "reverse"]


def speak(text: str, voice: str, speed: int, dest: Path, tmp: Path,
          pitch: int | None = None) -> float:
    """Synthesize `text` into `dest` (16 kHz mono FLAC); return the duration in seconds."""
    raw, mono = tmp / "raw.wav", tmp / "mono.wav"
    pitch_args = ["-p", str(pitch)] if pitch is not None else []
    subprocess.run(
        ["espeak-ng", "-v", f"en-us+{voice}", "-s", str(speed), *pitch_args, "-w", str(raw), text],
        check=True,
    )
    subprocess.run(
        ["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(mono), *TRIM],
        check=True,
    )
    audio, rate = sf.read(mono, dtype="int16")
    assert rate == RATE
    audio = (audio >> 4) << 4  # 12 significant bits: ~35% smaller FLAC, no audible change
    sf.write(dest, np.pad(audio, (PAD, PAD)), RATE, format="FLAC", subtype="PCM_16")
    return (len(audio) + 2 * PAD) / RATE
