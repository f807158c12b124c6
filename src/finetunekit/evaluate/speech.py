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


def error_counts(references: list[str],
                 hypotheses: list[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Per utterance, after `normalize_text` on both sides: word edits and reference words
    (`wer`), character edits and reference characters (`cer`). A corpus rate is the sum of the
    edits over the sum of the lengths.

    An empty (normalized) reference cannot be scored by WER; it is an error in the data, so
    callers reject such rows when reading.
    """
    import jiwer

    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    if not refs or any(not r for r in refs):
        raise ValueError("every reference needs at least one word after normalization")
    counts: dict[str, tuple[list[int], list[int]]] = {"wer": ([], []), "cer": ([], [])}
    for ref, hyp in zip(refs, hyps, strict=True):
        for name, align in (("wer", jiwer.process_words), ("cer", jiwer.process_characters)):
            out = align(ref, hyp)
            counts[name][0].append(out.substitutions + out.deletions + out.insertions)
            counts[name][1].append(out.substitutions + out.deletions + out.hits)
    return counts


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """{'wer', 'cer'} over the whole set (jiwer's corpus rates), after `normalize_text`."""
    return {name: sum(edits) / sum(lengths)
            for name, (edits, lengths) in error_counts(references, hypotheses).items()}


def example_wer(reference: str, hypothesis: str) -> float:
    """One utterance's WER."""
    edits, words = error_counts([reference], [hypothesis])["wer"]
    return edits[0] / words[0]
