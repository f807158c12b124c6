"""Word and character error rate (`jiwer`), after a simple, stated text normalization.

Whisper writes "Seven of hearts." where a transcript file says "seven of hearts"; counting case
and punctuation as errors would measure formatting, not recognition. So both sides are
normalized the same way before scoring: lower-cased, punctuation removed (apostrophes inside
words kept: "don't" stays one word), hyphens turned into spaces, whitespace collapsed. Numbers
are NOT spelled out ("7" and "seven" differ), so a reference should write them as spoken.
Rates are corpus-level: total edits over total reference words (characters), the usual
definition, so long utterances weigh more than short ones.
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZATION = "lowercase, punctuation removed (apostrophes in words kept), hyphens to spaces"
_PUNCT = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("-", " ")
    text = _LOOSE_APOSTROPHE.sub(" ", _PUNCT.sub(" ", text))
    return " ".join(text.split())


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """{'wer', 'cer'} over the whole set, after `normalize_text` on both sides.

    An empty (normalized) reference cannot be scored by WER; it is an error in the data, so
    callers reject such rows when reading.
    """
    import jiwer

    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    if not refs or any(not r for r in refs):
        raise ValueError("every reference needs at least one word after normalization")
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def example_wer(reference: str, hypothesis: str) -> float:
    """One utterance's WER (for per-example predictions)."""
    import jiwer

    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis)))
