"""From labelled spans to a validated :class:`OperatorIntent` (or the reason it cannot be one).

Span texts stay as the operator wrote them; only what compilation needs is normalised: the
action (from the operation verb, its negation, or the QoS/middlebox parts), the QoS requirement
(value, unit, metric) and the hours of the time window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError

from intent.data import Span
from intent.lexicon import WORD_CLASSES
from intent.schema import Action, NeedsClarification, OperatorIntent, QosRequirement
from nm_toolkit.errors import validation_reason

_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_RATE = {"k": "kbps", "m": "mbps", "g": "gbps"}
_VOLUME = {"k": "kb", "m": "mb", "g": "gb", "t": "tb"}
_PERIOD = {"d": "day", "w": "wk", "m": "mo", "s": "wk"}  # "seven days" is a week
_HOUR = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


# Verbs of policy prose beyond the lexicon's command verbs ("block", "allow", "install"), by the
# action they ask for: operators write "may not use", "lose access", "are quarantined", "are exempt from".
_BLOCK_VERBS = frozenset("prohibit refuse ban bar disconnect suspend quarantine isolate terminate lose filter stop cut".split())
_ALLOW_VERBS = frozenset("access run use reach connect communicate contact host stream initiate send".split())
_GRANT_VERBS = frozenset("receive get have retain keep".split())  # a QoS amount when one is named, else access
_ADD_VERBS = frozenset("pass forward through apply".split())
_REMOVE_VERBS = frozenset("exempt bypass exclude retire".split())


def _lemmas(word: str) -> set[str]:
    """The word and what it may be an inflection of: "dropped" -> "drop", "denies" -> "deny",
    "disabled" -> "disable", "prohibited" -> "prohibit" (a candidate that is no word matches nothing)."""
    out = {word}
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("es", ""), ("s", ""), ("ed", ""), ("d", ""), ("ing", ""), ("ing", "e")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)] + replacement
            out.add(stem)
            if suffix in ("ed", "ing") and len(stem) > 2 and stem[-1] == stem[-2]:
                out.add(stem[:-1])  # "dropped" -> "drop", "permitted" -> "permit"
    return out


def normalise_action(operation: str | None, has_middlebox: bool, has_qos: bool) -> Action | None:
    """``"do not let"`` -> block, ``"must not be blocked"`` -> allow, ``"install"`` -> add,
    ``"may not use"`` -> block, ``"are exempt from"`` -> remove, ...; without an operation verb the
    other parts decide (a middlebox is added, a QoS value set). A negated operation that is neither
    a block nor an allow ("cannot install", "is not inspected by") has no action: the middlebox it
    names is not to be added."""
    negated = False
    if operation:
        words = _words(operation)
        negated = any(w in WORD_CLASSES["negation"] or w.endswith("n't") for w in words)
        content = [w for w in words if w not in WORD_CLASSES["negation"]]
        for k, word in enumerate(content):
            lemmas = _lemmas(word)
            if lemmas & (WORD_CLASSES["verb_block"] | _BLOCK_VERBS):
                return "allow" if negated else "block"
            granted = bool(lemmas & _GRANT_VERBS) and k == len(content) - 1  # "have" in "have been blocked" is an auxiliary
            if granted and has_qos and not negated:
                return "set"
            if granted or lemmas & (WORD_CLASSES["verb_allow"] | _ALLOW_VERBS):
                return "block" if negated else "allow"
            if negated:
                continue
            if lemmas & (WORD_CLASSES["verb_remove"] | _REMOVE_VERBS):
                return "unset" if has_qos and not has_middlebox else "remove"
            if lemmas & {"increase", "reduce", "limit", "throttle"}:
                return "set"
            if lemmas & (WORD_CLASSES["verb_add"] | _ADD_VERBS):
                return "set" if has_qos and not has_middlebox else "add"
    if negated:
        return None
    if has_middlebox:
        return "add"
    if has_qos:
        return "set"
    return None


def normalise_qos(value: str | None, unit: str | None, metric: str | None, constraint: str | None) -> QosRequirement | None:
    """``("100", "mbps")`` -> bandwidth max 100 mbps; ``("10", "GB per week")`` -> quota 10 gb/wk."""
    if value is None or unit is None:
        return None
    number = _NUMBER_WORDS.get(value.strip().lower())
    if number is None:
        try:
            number = float(value.replace(",", ""))
        except ValueError:
            return None
    u = unit.lower().replace(" ", "")
    prefix = u[:1] if u[:1] in "kmgt" else ""
    rate = re.search(r"(ps|/s|persecond|bit)", u) and not re.search(r"(per|/)(day|d\b|w|week|mo|month)", u)
    if rate and prefix in _RATE:
        return QosRequirement(metric="bandwidth", constraint=_constraint(constraint), value=number, unit=_RATE[prefix])
    period = re.search(r"(?:per|/|a|of\w*in\w*)(day|d|week|wk|w|month|mo|m|seven)", u) or re.search(r"(daily|weekly|monthly)", u)
    if prefix in _VOLUME and period:
        unit_text = f"{_VOLUME[prefix]}/{_PERIOD[period.group(1)[0]]}"
        return QosRequirement(metric="quota", constraint=_constraint(constraint), value=number, unit=unit_text)
    if prefix in _RATE and (metric or "").lower().find("quota") < 0:
        return QosRequirement(metric="bandwidth", constraint=_constraint(constraint), value=number, unit=_RATE[prefix])
    return None


def _constraint(text: str | None) -> str:
    words = set(_words(text or ""))
    if words & {"min", "minimum", "least", "guarantee"}:
        return "min"
    return "max"


def normalise_hour(text: str | None) -> str | None:
    """``"from 4pm"`` -> ``"16:00"``, ``"to midnight"`` -> ``"00:00"``, ``"finish 19:00"`` -> ``"19:00"``."""
    if not text:
        return None
    lowered = text.lower()
    if "midnight" in lowered:
        return "00:00"
    if "noon" in lowered:
        return "12:00"
    match = _HOUR.search(lowered)
    if not match:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if match.group(3) == "pm" and hour < 12:
        hour += 12
    elif match.group(3) == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    return f"{hour:02d}:{minute:02d}"


def structure(text: str, spans: Sequence[Span]) -> OperatorIntent | NeedsClarification:
    """The operator intent the spans describe, or what to clarify when they do not make one."""
    by_type: dict[str, list[str]] = {}
    for span in spans:
        by_type.setdefault(span.type, []).append(span.text)
    first = {k: v[0] for k, v in by_type.items()}
    qos = normalise_qos(first.get("qos_value"), first.get("qos_unit"), first.get("qos_metric"), first.get("qos_constraint"))
    if "qos_value" in first and qos is None:
        return NeedsClarification(text=text, reason=f"cannot read the QoS value {first['qos_value']!r} {first.get('qos_unit', '(no unit)')!r}: say e.g. '100 mbps' or '10 GB per week'")
    action = normalise_action(first.get("operation"), "middlebox" in by_type, qos is not None or "qos_metric" in by_type)
    if action is None:
        what = f"{first['operation']!r} is no action the network can take" if "operation" in first else "no operation found"
        return NeedsClarification(text=text, reason=f"{what}: say what to do (block, allow, add/remove a middlebox, limit to a rate)")
    start, end = normalise_hour(first.get("start")), normalise_hour(first.get("end"))
    if ("start" in first and start is None) or ("end" in first and end is None):
        return NeedsClarification(text=text, reason="cannot read the time window: give hours like 'from 9am to 6pm' or 'from 09:00 to 18:00'")
    fields = {k: by_type.get(k, []) for k in ("origin", "destination", "target", "group", "middlebox", "traffic", "protocol", "service", "qos_metric")}
    try:
        return OperatorIntent(text=text, action=action, qos=qos, start=start, end=end, **fields)
    except ValidationError as exc:
        return NeedsClarification(text=text, reason=validation_reason(exc, limit=1))
