"""Build examples/data/cards-asr/: a small synthetic speech-recognition set about playing cards.

Why: fine-tuning a speech model is only convincing when the base model is measurably bad at the
domain and the held-out set is really held out. Whisper tiny.en hears plain English well but
garbles card vocabulary ("seven of hearts" -> "Sam with a heart"), so this set shows a WER drop
after training. Audio is synthesized with espeak-ng (no licence questions, reproducible), and the
test split uses sentences AND voices that never occur in train.

Usage: python scripts/make_cards_asr.py [--out DIR] [--train N] [--test N] [--seed S]
Needs Debian `espeak-ng` and `sox` (`apt-get install espeak-ng sox`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from espeak_clip import speak  # noqa: E402

TRAIN_VOICES = ["m1", "m2", "m3", "f1", "f2"]
TRAIN_SPEEDS = [160, 185, 210]
TEST_VOICES = ["m5", "f3"]  # never used in train
TEST_SPEEDS = [170, 195]

RANKS = ["ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
RANKS += ["jack", "queen", "king"]
PLURALS = {r: r + "s" for r in RANKS} | {"six": "sixes"}
SUITS = ["hearts", "diamonds", "clubs", "spades"]
COUNTS = ["two", "three", "four"]

# Short sentences keep the folder small; every slot draws from the card vocabulary.
TEMPLATES = [
    "the {card} beats the {card2}",
    "deal {count} {plural} and the {card}",
    "play the {card}",
    "discard the {card}",
    "{card} on {card2}",
    "{card} and {card2}",
    "a pair of {plural}",
    "three {plural} and two {plural2}",
    "{suit} are trumps",
    "she draws the {card}",
    "a flush in {suit}",
    "{card} wins the trick",
    "who has the {card}",
    "lead with the {card}",
    "{card}",
]

PROVENANCE = """# cards-asr: synthetic speech about playing cards

Made by `scripts/make_cards_asr.py` (seed {seed}) with eSpeak NG {espeak} (Debian `espeak-ng`,
GPL-3+; its licence covers the program, not the audio it produces) and SoX (Debian `sox`).
Every sentence comes from a small set of templates filled with playing-card words (ranks,
suits, "trumps", "flush", "trick" ...) and is spoken by `espeak-ng -v en-us+VOICE -s SPEED`,
then converted by sox to 16 kHz mono with leading / trailing silence trimmed, padded with 50 ms
of silence on each side, quantized to 12 significant bits (the low 4 bits are zero, which FLAC
stores for free; inaudible for ASR) and written as 16-bit FLAC. The script is deterministic:
re-running it gives byte-identical files.

| split | clips | sentences | voices | speeds (words/min) |
| --- | --- | --- | --- | --- |
| train | {n_train} | {n_train} distinct | {train_voices} | {train_speeds} |
| test | {n_test} | {n_test} distinct, none in train | {test_voices} (unseen) | {test_speeds} |

`train.jsonl` / `test.jsonl`: `{{"audio": "audio/NAME.flac", "text": "..."}}`, paths relative to
the JSONL file, text in lower-case words without punctuation (numbers spelled out).
Total audio: {seconds:.0f} s.

Baseline: the untuned built-in Whisper tiny.en scores WER 0.59 on `test.jsonl`
(`python scripts/zero_shot_asr.py`; lower-cased, punctuation removed, digits not spelled out:
0.54 if they were). It hears "six of spades" as "sick sun fades", "king of clubs" as
"king on clothes".
"""


def sentences(rng: random.Random, n: int) -> list[str]:
    """`n` distinct sentences; templates are drawn uniformly, so short ones are not crowded out
    by the templates with many possible fillings."""
    cards = [f"{r} of {s}" for r, s in itertools.product(RANKS, SUITS)]
    out: dict[str, None] = {}  # ordered set: the result depends only on the seed
    for _ in range(100 * n):
        if len(out) == n:
            return list(out)
        c1, c2 = rng.sample(cards, 2)
        p1, p2 = rng.sample(list(PLURALS.values()), 2)
        fill = dict(card=c1, card2=c2, plural=p1, plural2=p2, count=rng.choice(COUNTS))
        out[rng.choice(TEMPLATES).format(suit=rng.choice(SUITS), **fill)] = None
    raise ValueError(f"the templates cannot make {n} distinct sentences")



def render(rows: list[tuple[str, str, int]], split: str, out: Path, tmp: Path) -> float:
    seconds = 0.0
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
        for i, (text, voice, speed) in enumerate(rows):
            name = f"audio/{split}-{i:03d}.flac"
            seconds += speak(text, voice, speed, out / name, tmp)
            f.write(json.dumps({"audio": name, "text": text}) + "\n")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/data/cards-asr"))
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install espeak-ng sox")

    rng = random.Random(args.seed)
    pool = sentences(rng, args.train + args.test)
    train_text, test_text = pool[: args.train], pool[args.train : args.train + args.test]
    assert not set(train_text) & set(test_text)
    train_combos = list(itertools.product(TRAIN_VOICES, TRAIN_SPEEDS))
    test_combos = list(itertools.product(TEST_VOICES, TEST_SPEEDS))
    train = [(t, *train_combos[i % len(train_combos)]) for i, t in enumerate(train_text)]
    test = [(t, *test_combos[i % len(test_combos)]) for i, t in enumerate(test_text)]

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "audio").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = render(train, "train", args.out, Path(tmp))
        seconds += render(test, "test", args.out, Path(tmp))
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    (args.out / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            seed=args.seed,
            espeak=espeak.split()[3],
            n_train=len(train),
            n_test=len(test),
            train_voices=", ".join(TRAIN_VOICES),
            test_voices=", ".join(TEST_VOICES),
            train_speeds=", ".join(map(str, TRAIN_SPEEDS)),
            test_speeds=", ".join(map(str, TEST_SPEEDS)),
            seconds=seconds,
        ),
        encoding="utf-8",
    )
    print(f"wrote {len(train)} train + {len(test)} test clips ({seconds:.0f} s) to {args.out}")


if __name__ == "__main__":
    main()
