"""Structured operator intents -> Nile program text, conflicts between intents, and the adapter to
the controller's :class:`policies.intents.NetworkIntent`.

Nile (Jacobs et al., "Refining Network Intents for Self-Driving Networks", SIGCOMM SelfDN 2018;
as used by Lumi, USENIX ATC 2021) reads::

    define intent uniIntent: from endpoint('gateway') to endpoint('database') add middlebox('firewall')
        start hour('10:00') end hour('15:00')
    define intent qosIntent: for group('students') set quota('max', '10', 'gb/wk')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from intent.schema import OperatorIntent
from policies.intents import NetworkIntent, TrafficSelector

_FILLER = frozenset("from to for in on at of the a an all any and between into through via my our every".split())
_WELL_KNOWN_PORTS = {"ssh": ("tcp", 22), "sftp": ("tcp", 22), "ftp": ("tcp", 21), "http": ("tcp", 80), "https": ("tcp", 443),
                     "sip": ("udp", 5060), "rtsp": ("tcp", 554), "dns": ("udp", 53), "smtp": ("tcp", 25), "telnet": ("tcp", 23)}


def entity_name(span: str) -> str:
    """``"from the Internet"`` -> ``"internet"``, ``"F2movies traffic"`` -> ``"f2movies"``: the
    entity an endpoint/traffic span names, without prepositions, articles and the word traffic."""
    words = [w for w in re.findall(r"[a-z0-9][a-z0-9/._-]*", span.lower()) if w not in _FILLER]
    if words and words[-1] == "traffic":
        words = words[:-1]
    return " ".join(words) or "all"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _call(function: str, *args: str) -> str:
    return f"{function}({', '.join(_quote(a) for a in args)})"


def intent_name(intent: OperatorIntent) -> str:
    """A Nile identifier for the intent: camel-cased action plus its first subject."""
    subject = (intent.middlebox or intent.service or intent.traffic or intent.protocol or intent.target or intent.group or ["all"])[0]
    words = re.findall(r"[a-z0-9]+", entity_name(subject)) or ["all"]
    name = intent.action + "".join(w.capitalize() for w in words)
    return name if name[0].isalpha() else "i" + name


def compile_nile(intent: OperatorIntent, name: str | None = None) -> str:
    """One ``define intent`` line in Nile syntax."""
    parts: list[str] = []
    if intent.origin:
        parts.append("from " + ", ".join(_call("endpoint", entity_name(o)) for o in intent.origin))
    if intent.destination:
        parts.append("to " + ", ".join(_call("endpoint", entity_name(d)) for d in intent.destination))
    subjects = [_call("service", entity_name(s)) for s in intent.service] + [_call("traffic", entity_name(t)) for t in intent.traffic] + [
        _call("protocol", entity_name(p)) for p in intent.protocol
    ]
    scope = [_scope_call(s) for s in (*intent.target, *intent.group)]
    if intent.action in ("allow", "block"):
        if scope:
            parts.append("for " + ", ".join(scope))
        parts.append(f"{intent.action} " + ", ".join(subjects or [_call("traffic", "all")]))
    else:
        if scope or subjects:
            parts.append("for " + ", ".join(scope + subjects))
        if intent.action in ("add", "remove"):
            parts.append(f"{intent.action} " + ", ".join(_call("middlebox", entity_name(m)) for m in intent.middlebox))
        elif intent.action == "set":
            assert intent.qos is not None  # enforced by OperatorIntent
            parts.append("set " + _call(intent.qos.metric, intent.qos.constraint, f"{intent.qos.value:g}", intent.qos.unit))
        else:
            parts.append("unset " + ", ".join(_call(_metric_kind(m)) for m in intent.qos_metric))
    if intent.start and intent.end:
        parts.append(f"start {_call('hour', intent.start)} end {_call('hour', intent.end)}")
    return f"define intent {name or intent_name(intent)}: " + " ".join(parts)


def is_population(span: str) -> bool:
    """Whether ``span`` names people or hosts ("for all students", "guest users", "Staff members"):
    its last word, as :func:`entity_name` keeps it, is in the lexicon's ``group`` class."""
    from intent.lexicon import word_classes

    words = entity_name(span).split()
    return bool(words) and "group" in word_classes(words[-1])


def _scope_call(span: str) -> str:
    """``group('students')`` for a population, ``endpoint('dorms')`` for a place, whichever entity
    type the extractor gave the span: the labelled data calls "students" a ``target`` after a
    preposition and a ``group`` as a clause's subject (48 to 3 in the alpha file), while Nile has
    one meaning for it, so the compiled intent must not depend on which label a tagger picked."""
    return _call("group" if is_population(span) else "endpoint", entity_name(span))


def _metric_kind(text: str) -> str:
    return "quota" if "quota" in text.lower() else "bandwidth"


@dataclass(frozen=True)
class Conflict:
    """Intents ``first`` and ``second`` (indices) cannot both hold; ``reason`` says why."""

    first: int
    second: int
    reason: str


def _endpoints(intent: OperatorIntent) -> frozenset[str]:
    return frozenset(entity_name(s) for s in (*intent.origin, *intent.destination, *intent.target, *intent.group))


def _traffic(intent: OperatorIntent) -> frozenset[str]:
    names = {entity_name(s) for s in (*intent.traffic, *intent.service, *intent.protocol)}
    return frozenset(names - {"all"})


def _overlap(a: frozenset[str], b: frozenset[str]) -> bool:
    """Empty means "everything", so it overlaps anything."""
    return not a or not b or bool(a & b)


def _minutes(intent: OperatorIntent) -> set[int] | None:
    if intent.start is None or intent.end is None:
        return None
    start = int(intent.start[:2]) * 60 + int(intent.start[3:])
    end = int(intent.end[:2]) * 60 + int(intent.end[3:])
    length = (end - start) % 1440 or 1440
    return {(start + m) % 1440 for m in range(length)}


def _same_time(a: OperatorIntent, b: OperatorIntent) -> bool:
    wa, wb = _minutes(a), _minutes(b)
    return wa is None or wb is None or bool(wa & wb)


def conflict_reason(a: OperatorIntent, b: OperatorIntent) -> str | None:
    """Why ``a`` and ``b`` conflict, or None: they must cover the same endpoints, traffic and hours,
    and then either allow vs block, add vs remove the same middlebox, or set different QoS."""
    if not (_overlap(_endpoints(a), _endpoints(b)) and _overlap(_traffic(a), _traffic(b)) and _same_time(a, b)):
        return None
    if {a.action, b.action} == {"allow", "block"}:
        return "one allows and the other blocks the same traffic"
    if {a.action, b.action} == {"add", "remove"}:
        common = {entity_name(m) for m in a.middlebox} & {entity_name(m) for m in b.middlebox}
        if common:
            return f"one adds and the other removes middlebox {', '.join(sorted(common))}"
    if a.action == b.action == "set" and a.qos and b.qos and a.qos.metric == b.qos.metric and a.qos != b.qos:
        return f"different {a.qos.metric} for the same traffic: {a.qos.value:g} {a.qos.unit} vs {b.qos.value:g} {b.qos.unit}"
    return None


def find_conflicts(intents: Sequence[OperatorIntent]) -> list[Conflict]:
    """Every conflicting pair among ``intents``."""
    found = []
    for i in range(len(intents)):
        for j in range(i + 1, len(intents)):
            reason = conflict_reason(intents[i], intents[j])
            if reason:
                found.append(Conflict(i, j, reason))
    return found


_RATE_KBPS = {"kbps": 1.0, "mbps": 1e3, "gbps": 1e6}


def to_network_intent(intent: OperatorIntent, intent_id: str, tenant: str) -> NetworkIntent | None:
    """The controller's form of an allow/block intent, a bandwidth cap or a prioritisation (a QoS
    queue), or None when the intent has no switch-level meaning there (other middleboxes, quotas,
    hours: those stay in Nile)."""
    target = next(iter(intent.target or intent.destination or intent.group), None)
    if target is None:
        return None
    protocols = [entity_name(p) for p in intent.protocol]
    selector = TrafficSelector()
    if protocols and protocols[0] in ("tcp", "udp"):
        selector = TrafficSelector(protocol=protocols[0])  # type: ignore[arg-type]
    elif protocols and protocols[0] in _WELL_KNOWN_PORTS:
        proto, port = _WELL_KNOWN_PORTS[protocols[0]]
        selector = TrafficSelector(protocol=proto, port=port)  # type: ignore[arg-type]
    common = {"id": intent_id, "tenant": tenant, "target": entity_name(target), "traffic": selector, "text": intent.text}
    if intent.action in ("allow", "block"):
        return NetworkIntent(action=intent.action, **common)
    if intent.action == "set" and intent.qos and intent.qos.metric == "bandwidth" and intent.qos.constraint == "max":
        return NetworkIntent(action="limit", rate_kbps=intent.qos.value * _RATE_KBPS[intent.qos.unit], **common)
    if intent.action == "add" and any(entity_name(m).startswith("priorit") for m in intent.middlebox):
        # Nile writes "prioritize X" as a middlebox on X's path (the alpha file labels it so): at a
        # switch it is X's traffic in the high-priority queue.
        return NetworkIntent(action="prioritize", qos="high", **common)
    return None
