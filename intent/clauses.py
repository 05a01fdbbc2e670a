"""Clauses of policy prose, and the ones an extraction left unread.

A policy sentence is often a rule plus a condition or an aside ("If abuse is reported, guests lose
access to the VPN"; "... is blocked; only the mail relay may send mail"). Nile holds what the
rule says and, of conditions, only a time window (start and end). So that nothing is dropped
silently, :func:`unread_clauses` names each clause that no extracted span touches and that still
says something (two or more content words), and each condition that is not a time window: the
parser answers those with a clarification that quotes the clause (:func:`intent.methods.parse_operator_intents`).

Clauses are cut at ";", ":", sentence ends, a comma before a conjunction that opens a new clause
("but", "while", "unless", ...) and the comma that closes a leading condition ("If ..., ").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from intent.data import Span, tokenize
from intent.lexicon import WORD_CLASSES

CONDITION_OPENERS = frozenset(("if", "when", "where", "whenever", "unless", "once", "provided", "while", "until", "after", "before", "should"))
_CUT = re.compile(r"[;:]\s+|(?<=[.!?])\s+(?=[A-Z])|,\s+(?=(?:but|while|whereas|unless|except|although|though|and then|so)\b)", re.IGNORECASE)
# words that carry no content of their own in a clause: function words and the lexicon's structure classes
_FUNCTION = frozenset((
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "from", "by", "with", "as", "is", "are", "be", "been", "being",
    "was", "were", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "do", "does", "did", "not",
    "no", "this", "that", "these", "those", "it", "its", "their", "they", "them", "there", "here", "and", "or", "but", "if",
    "then", "than", "so", "any", "all", "every", "each", "only", "also", "such", "which", "who", "whom", "whose", "what",
    "when", "where", "while",
)) | WORD_CLASSES["determiner"] | WORD_CLASSES["auxiliary"]  # fmt: skip


@dataclass(frozen=True)
class Clause:
    start: int
    end: int
    text: str
    condition: bool  # a leading condition: "If ...", "When ...", "Unless ..."


def split_clauses(text: str) -> list[Clause]:
    """The clauses of ``text`` in order, with character offsets (a pure function)."""
    pieces, pos = [], 0
    for cut in _CUT.finditer(text):
        pieces.append((pos, cut.start()))
        pos = cut.end()
    pieces.append((pos, len(text)))
    out = []
    for start, end in pieces:
        chunk = text[start:end]
        first = chunk.split(None, 1)[0].lower() if chunk.strip() else ""
        comma = chunk.find(",")
        if first in CONDITION_OPENERS and comma > 0:  # "If abuse is reported, guests lose ..." -> condition, rule
            out.append(_clause(text, start, start + comma, True))
            start = start + comma + 1
        out.append(_clause(text, start, end, False))
    return [c for c in out if c.text]


def _clause(text: str, start: int, end: int, condition: bool) -> Clause:
    chunk = text[start:end]
    lead = len(chunk) - len(chunk.lstrip())
    stripped = chunk.strip().rstrip(".!?,")
    return Clause(start + lead, start + lead + len(stripped), stripped, condition)


def content_words(text: str) -> list[str]:
    return [t.text for t in tokenize(text) if t.text.isalpha() and t.text.lower() not in _FUNCTION]


def unread_clauses(text: str, spans: Sequence[Span]) -> list[tuple[str, str]]:
    """``(clause, reason)`` for each clause of ``text`` the spans leave unread: one with two or
    more content words that no span touches, or a condition that holds no time window."""
    out = []
    for clause in split_clauses(text):
        inside = [s for s in spans if s.start < clause.end and clause.start < s.end]
        if clause.condition and not any(s.type in ("start", "end") for s in inside):
            out.append((clause.text, "a condition Nile cannot express (only a time window): say what holds, or the hours"))
        elif not inside and len(content_words(clause.text)) >= 2:
            out.append((clause.text, "no network entity read in this clause: rephrase it as a rule, or leave it out"))
    return out
