"""Build examples/data/commands/: spoken one-word commands for audio classification.

Why: audio classification needs a set where the label is unambiguous, the classes are balanced
and the test speakers are new, so accuracy measures generalization rather than memorized voices.
Ten keyword-spotting words (the "speech commands" vocabulary) are synthesized with espeak-ng:
train with 8 voices x 3 speeds, test with 2 voices that never occur in train.

Usage: python scripts/make_commands.py [--out DIR]
Needs Debian `espeak-ng` and `sox` (`apt-get install espeak-ng sox`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from espeak_clip import speak  # noqa: E402

WORDS = ["yes", "no", "up", "down", "left", "right", "stop", "go", "on", "off"]
TRAIN_VOICES = ["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f4"]
TEST_VOICES = ["m6", "f5"]  # never used in train
SPEEDS = [130, 170, 210]
PITCHES = {130: 40, 170: 50, 210: 60}  # vary pitch with speed for a little more spread

PROVENANCE = """# commands: spoken one-word commands (audio classification)

Made by `scripts/make_commands.py` with eSpeak NG {espeak} (Debian `espeak-ng`, GPL-3+; its
licence covers the program, not the audio it produces) and SoX (Debian `sox`). Each of the 10
words ({words})
is spoken by `espeak-ng -v en-us+VOICE -s SPEED -p PITCH`, converted by sox to 16 kHz mono with
silence trimmed, padded with 50 ms of silence on each side, quantized to 12
significant bits (low 4 bits zero, which FLAC stores for free) and written as 16-bit FLAC.

| split | clips | voices | speed (words/min) / pitch |
| --- | --- | --- | --- |
| train | {n_train} (balanced) | {train_voices} | {speeds} |
| test | {n_test} (balanced) | {test_voices} (unseen) | {speeds} |

`train.jsonl` / `test.jsonl`: `{{"audio": "audio/NAME.flac", "label": "WORD"}}`, paths relative
to the JSONL file. Total audio: {seconds:.0f} s.
"""



def render(split: str, voices: list[str], out: Path, tmp: Path) -> tuple[int, float]:
    n, seconds = 0, 0.0
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
        for voice, speed, word in itertools.product(voices, SPEEDS, WORDS):
            name = f"audio/{split}-{word}-{voice}-{speed}.flac"
            seconds += speak(word, voice, speed, out / name, tmp, pitch=PITCHES[speed])
            f.write(json.dumps({"audio": name, "label": word}) + "\n")
            n += 1
    return n, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/data/commands"))
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install espeak-ng sox")
    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "audio").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        n_train, s_train = render("train", TRAIN_VOICES, args.out, Path(tmp))
        n_test, s_test = render("test", TEST_VOICES, args.out, Path(tmp))
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    (args.out / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            espeak=espeak.split()[3],
            words=", ".join(WORDS),
            n_train=n_train,
            n_test=n_test,
            train_voices=", ".join(TRAIN_VOICES),
            test_voices=", ".join(TEST_VOICES),
            speeds=", ".join(f"{s} / {PITCHES[s]}" for s in SPEEDS),
            seconds=s_train + s_test,
        ),
        encoding="utf-8",
    )
    print(f"wrote {n_train} train + {n_test} test clips ({s_train + s_test:.0f} s) to {args.out}")


if __name__ == "__main__":
    main()
