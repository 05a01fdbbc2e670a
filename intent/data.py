"""Nile/Lumi-format labelled intents: loading, tokenising, and the BIO view the taggers learn from.

A file is ``{"intents": [{"text": ..., "parts": [{"text": ..., "entity_type": "@traffic"}, ...]}]}``
(the format of the Lumi project's ``extraction_*.json``). Concatenating the parts' text gives the
intent text; parts with an ``entity_type`` are labelled spans. ``@sys.ignore`` parts are unlabelled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intent.schema import ENTITY_TYPES
from nm_toolkit.errors import UserError

_TOKEN = re.compile(r"\d+(?:[.:,]\d+)*|[^\W\d_]+(?:['-][^\W\d_]+)*|[^\w\s]|_")
OUTSIDE = "O"


class IntentDataError(UserError):
    """An intents file cannot be read as Nile/Lumi-format labelled data."""


@dataclass(frozen=True)
class Span:
    """A labelled entity: ``text[start:end]`` is of ``type`` (without the leading '@')."""

    type: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class LabelledIntent:
    text: str
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Words, numbers ("16:00", "2.5") and single punctuation marks; digits and letters split
    ("4pm" -> "4", "pm") because the labelled spans split them ("5" @qos_value, "gbps" @qos_unit).
    A hyphenated word is one word ("point-of-sale", "Wi-Fi", "university-owned"): no labelled span
    ends inside one, and a tagger that saw its parts as words cut spans there ("of-sale terminals")."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def parse_intent(item: object, where: str) -> LabelledIntent:
    """One ``{"text", "parts"}`` record; spans of unknown entity types are rejected with the reason."""
    if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
        raise IntentDataError(f"{where}: expected an object with a 'parts' list")
    text, spans, pos = "", [], 0
    for part in item["parts"]:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise IntentDataError(f"{where}: every part needs a 'text' string")
        chunk: str = part["text"]
        kind = part.get("entity_type")
        if kind and kind != "@sys.ignore":
            name = str(kind).lstrip("@")
            if name not in ENTITY_TYPES:
                raise IntentDataError(f"{where}: unknown entity type {kind!r}; known: {', '.join(ENTITY_TYPES)}")
            lead = len(chunk) - len(chunk.lstrip())
            stripped = chunk.strip()
            if stripped:
                spans.append(Span(name, pos + lead, pos + lead + len(stripped), stripped))
        text += chunk
        pos += len(chunk)
    if "text" in item and item["text"] != text:
        raise IntentDataError(f"{where}: 'text' differs from the concatenated parts")
    return LabelledIntent(text, tuple(spans))


def load_intents(path: Path) -> list[LabelledIntent]:
    """All intents of a Nile/Lumi-format file, or a one-line error that says what to fix."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise IntentDataError(f"no intents file at {path}: pass an existing Nile-format JSON file") from exc
    except (OSError, ValueError) as exc:
        raise IntentDataError(f"{path} is not JSON ({exc}): pass a Nile-format file") from exc
    items = data.get("intents") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise IntentDataError(f"{path} has no 'intents' list: expected {{'intents': [{{'text', 'parts'}}]}}")
    return [parse_intent(item, f"{path} intent {i}") for i, item in enumerate(items)]


def token_range(tokens: Sequence[Token], span: Span) -> tuple[int, int] | None:
    """The tokens a labelled span covers, those whose start lies in it, as ``(first, end)`` (end
    exclusive); None when it covers none. Every tagger maps spans to tokens through this one rule."""
    inside = [k for k, t in enumerate(tokens) if span.start <= t.start < span.end]
    return (inside[0], inside[-1] + 1) if inside else None


def bio_tags(tokens: Sequence[Token], spans: Sequence[Span]) -> list[str]:
    """B-/I- tags of ``tokens`` for ``spans`` (tokens as :func:`token_range` assigns them)."""
    tags = [OUTSIDE] * len(tokens)
    for span in spans:
        covered = token_range(tokens, span)
        if covered:
            first, end = covered
            for i in range(first, end):
                tags[i] = ("B-" if i == first else "I-") + span.type
    return tags


def decode_spans(text: str, tokens: Sequence[Token], tags: Sequence[str]) -> list[Span]:
    """Spans from BIO tags; an I- tag that does not continue a span of its type starts one."""
    spans: list[Span] = []
    current: tuple[str, int, int] | None = None
    for token, tag in zip(tokens, tags, strict=True):
        kind = tag[2:] if tag != OUTSIDE else None
        if current and (kind != current[0] or tag.startswith("B-")):
            spans.append(Span(current[0], current[1], current[2], text[current[1] : current[2]]))
            current = None
        if kind and current is None:
            current = (kind, token.start, token.end)
        elif kind and current:
            current = (kind, current[1], token.end)
    if current:
        spans.append(Span(current[0], current[1], current[2], text[current[1] : current[2]]))
    return spans
