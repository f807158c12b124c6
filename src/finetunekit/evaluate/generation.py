"""Metrics for generated text against a reference: exact match, token F1, ROUGE-L.

Small, dependency-free versions of the usual definitions. Exact match compares the texts with
whitespace runs collapsed (case and punctuation matter: a fixed output format is the point of
many SFT tasks). Token F1 (SQuAD-style) and ROUGE-L (LCS F-measure) compare lower-cased word and
punctuation tokens, so they give partial credit.
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalize_ws(text: str) -> str:
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_ws(prediction) == normalize_ws(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Exact match, token F1 and ROUGE-L of each pair (a metric is their mean)."""
    pairs = list(zip(predictions, references, strict=True))
    return {name: [fn(p, r) for p, r in pairs]
            for name, fn in (("exact_match", exact_match), ("token_f1", token_f1),
                             ("rouge_l", rouge_l))}
