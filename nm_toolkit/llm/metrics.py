"""Completion-quality metrics: exact match and ROUGE-L (LCS-based F-measure), as pure functions.

ROUGE-L follows Lin (2004) with beta = 1 on lower-cased whitespace tokens with punctuation split
off, which is what ``rouge-score`` computes for English text without stemming.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (``rouge-score``'s default tokenizer without stemming)."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a)*len(b)))."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of ``prediction`` against ``reference``; 1.0 when both are empty."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred and not ref:
        return 1.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after trimming and collapsing whitespace (case matters: it is a prompt, not a label)."""
    return " ".join(prediction.split()) == " ".join(reference.split())
