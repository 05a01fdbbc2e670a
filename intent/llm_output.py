"""Reading an LLM's intent JSON safely: extract, repair, ground, validate.

The model is asked for ``{"<entity type>": ["span", ...], ...}``. What it writes is untrusted:
it may wrap the JSON in prose or code fences, leave a trailing comma, use single quotes, invent
keys ("tenant", "admin"), or emit spans that are not in the operator's text (the mark of a
prompt that told it to ignore its instructions). Repairs are syntactic only; every kept span must
occur verbatim in the input text, and anything else is dropped with a note. When nothing usable
is left, the result is :class:`NeedsClarification` with the reason, never a guessed intent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from intent.data import Span
from intent.schema import ENTITY_TYPES

MAX_OUTPUT_CHARS = 4000
MAX_SPANS = 24
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


@dataclass
class ParsedOutput:
    """Grounded spans, and what was repaired or dropped on the way (for logs and clarification)."""

    spans: list[Span] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    error: str | None = None


def _first_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (string-aware), closing it if the output was cut."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escape = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            escape = ch == "\\" and not escape
            if ch == '"' and not escape:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _load(candidate: str, repairs: list[str]) -> object:
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", candidate)
    if "'" in fixed and '"' not in fixed:
        fixed = fixed.replace("'", '"')
    repairs.append("fixed JSON syntax (trailing comma or single quotes)")
    return json.loads(fixed)


def _ground(text: str, value: str, after: int = 0) -> tuple[int, int] | None:
    """Where ``value`` occurs in ``text``: its first occurrence from ``after`` on, else anywhere;
    exact case first, then any case. Whitespace runs match any whitespace run, because the model
    sees the text with its whitespace collapsed."""
    pattern = r"\s+".join(re.escape(word) for word in value.split())
    for flags in (0, re.IGNORECASE):
        regex = re.compile(pattern, flags)
        found = regex.search(text, after) or regex.search(text)
        if found:
            return found.span()
    return None


def parse_llm_output(text: str, output: str) -> ParsedOutput:
    """Spans the model output names, grounded in ``text``; ``error`` set when none can be trusted."""
    result = ParsedOutput()
    if len(output) > MAX_OUTPUT_CHARS:
        result.error = f"model output is {len(output)} characters (limit {MAX_OUTPUT_CHARS})"
        return result
    candidate = _first_object(_FENCE.sub("", output))
    if candidate is None:
        result.error = "model output contains no JSON object"
        return result
    try:
        data = _load(candidate, result.repairs)
    except ValueError as exc:
        result.error = f"model output is not valid JSON ({exc})"
        return result
    if not isinstance(data, dict):
        result.error = "model output is not a JSON object of entity lists"
        return result
    for key, values in data.items():
        kind = str(key).lstrip("@")
        if kind not in ENTITY_TYPES:
            result.repairs.append(f"dropped unknown field {str(key)[:40]!r}")
            continue
        after = 0  # a type's spans are listed in text order: a repeated word is the next occurrence
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str) or not value.strip():
                result.repairs.append(f"dropped non-text {kind} value")
                continue
            where = _ground(text, value.strip(), after)
            if where is None:
                result.repairs.append(f"dropped {kind} {value.strip()[:40]!r}: not in the text")
                continue
            after = where[1]
            if len(result.spans) < MAX_SPANS:
                result.spans.append(Span(kind, where[0], where[1], text[where[0] : where[1]]))
    if not result.spans:
        result.error = "model output names no entity found in the text" + (f" ({'; '.join(result.repairs[:3])})" if result.repairs else "")
    result.spans.sort(key=lambda s: s.start)
    return result


def target_json(spans: list[Span]) -> str:
    """The training target for a labelled intent: entity lists in the canonical type order.

    Each span is written with a leading space (``" for guest"``), so that the byte-level BPE splits
    it into the same tokens as in the prompt (``Ġfor Ġguest``, not ``f or Ġguest``) and copying a
    span is repeating tokens the model has just read; the reader strips the space."""
    grouped: dict[str, list[str]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        grouped.setdefault(span.type, []).append(" " + span.text)
    return json.dumps({k: grouped[k] for k in ENTITY_TYPES if k in grouped}, separators=(",", ":"))
