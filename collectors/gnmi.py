"""gNMI / OpenConfig interface counters: notifications in, per-second rates out.

Devices report cumulative counters (``/interfaces/interface[name=X]/state/counters/in-octets``).
What a forecaster needs is a rate, so consecutive samples of one counter become
``delta / elapsed``, with the two ways a counter goes backwards told apart: a *wrap* (a counter64,
or a counter32 on older gear, passed its maximum) and a *reset* (the device or line card
restarted and counts again from zero).

Accepted JSON forms: a gNMI ``SubscribeResponse`` or ``Notification`` in the protobuf JSON
mapping (``{"update": {"timestamp": "…ns", "prefix": {...}, "update": [{"path": ..., "val":
{"uintVal": "…"}}]}}``), with paths as ``elem`` lists or as strings like
``interfaces/interface[name=eth0]/state/counters/in-octets`` (gnmic's output).

Notifications come from devices, so nothing about their shape is trusted: a malformed update is an
error of its own (the notification's other updates still count), a malformed or implausibly
dated notification an error as a whole, and neither ever an exception of another kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import TelemetryRecord, brief, is_identifier

_COUNTER32 = 1 << 32
_COUNTER64 = 1 << 64
_INT64 = 1 << 63
_PATH_ELEM = re.compile(r"([^/\[]+)((?:\[[^\]]*\])*)")
_PATH_KEY = re.compile(r"\[([^=\]]+)=([^\]]*)\]")
_DECIMAL = re.compile(r"-?[0-9]{1,20}")  # int64 / uint64 in the protobuf JSON mapping: a string
_VALUE_FIELDS = ("uintVal", "intVal", "uint_val", "int_val", "jsonVal", "json_val", "jsonIetfVal")

Elems = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One reading of one cumulative counter of one interface of one device."""

    target: str
    interface: str
    counter: str
    ts: float
    value: int

    @property
    def source(self) -> str:
        """The source of the rate records this counter becomes."""
        return f"{self.target}/{self.interface}"

    @property
    def metric(self) -> str:
        """The metric of the rate records this counter becomes."""
        return f"{self.counter.replace('-', '_')}_per_s"


def is_notification(obj: Any) -> bool:
    """Whether a decoded JSON object looks like a gNMI SubscribeResponse or Notification."""
    if not isinstance(obj, dict):
        return False
    inner = obj.get("update")
    return isinstance(inner, dict) or (isinstance(inner, list) and "timestamp" in obj)


def _integer(value: Any) -> int:
    """An integer as the protobuf JSON mapping writes one: a JSON integer or a decimal string.

    Booleans, fractions and other shapes are refused rather than truncated: ``int(1.5)`` or
    ``int(True)`` would turn a producer's bug into a plausible-looking reading."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    raise ValueError(f"{brief(value)} is not an integer")


def _timestamp(notification: dict[str, Any]) -> float:
    """The notification's time in Unix seconds, from int64 nanoseconds."""
    try:
        ns = _integer(notification["timestamp"])
    except (KeyError, ValueError) as exc:
        raise ValueError("gNMI notification needs an integer 'timestamp' in nanoseconds") from exc
    if not 0 <= ns < _INT64:
        raise ValueError(f"gNMI timestamp {ns} ns is outside int64 nanoseconds since 1970")
    return ns / 1e9


def _counter(val: Any) -> int:
    """The reading of a TypedValue (or a bare integer): a counter in [0, 2**64)."""
    raw = val
    if isinstance(val, dict):
        raw = next((val[f] for f in _VALUE_FIELDS if f in val), None)
        if raw is None:
            raise ValueError(f"gNMI value {brief(val)} is not an integer counter")
    try:
        value = _integer(raw)
    except ValueError:
        raise ValueError(f"gNMI value {brief(val)} is not an integer counter") from None
    if not 0 <= value < _COUNTER64:
        raise ValueError(f"gNMI counter {brief(value)} is outside [0, 2**64)")
    return value


def _elem(elem: Any) -> tuple[str, dict[str, str]]:
    """One PathElem: a name and string keys."""
    if not isinstance(elem, dict):
        raise ValueError(f"gNMI path element {brief(elem)} is not an object")
    name, keys = elem.get("name"), elem.get("key") or {}
    if not isinstance(name, str) or not name:
        raise ValueError(f"gNMI path element {brief(elem)} has no name")
    if not isinstance(keys, dict) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in keys.values()):
        raise ValueError(f"gNMI path element {brief(name)} has keys {brief(keys)}: expected a map of strings")
    return name, {str(k): str(v) for k, v in keys.items()}


def _elems(path: Any) -> Elems:
    """A path as (name, keys) pairs: a gNMI Path object or a gnmic-style string."""
    if path is None:
        return []
    if isinstance(path, str):
        return [(m.group(1), dict(_PATH_KEY.findall(m.group(2)))) for m in _PATH_ELEM.finditer(path.strip("/"))]
    if isinstance(path, dict):
        elems = path.get("elem") or []
        if not isinstance(elems, list):
            raise ValueError(f"gNMI path 'elem' must be a list, not {brief(elems)}")
        return [_elem(e) for e in elems]
    raise ValueError(f"unsupported gNMI path {brief(path)}")


def _device(obj: dict[str, Any], prefix: Any) -> str:
    """The device a notification is from: ``prefix.target``, or gnmic's ``source``."""
    target = (prefix.get("target") if isinstance(prefix, dict) else None) or obj.get("source")
    if not target:
        raise ValueError("gNMI notification names no device: set prefix.target (or 'source')")
    if not is_identifier(target):
        raise ValueError(f"gNMI device {brief(target)} is not an identifier (1-256 characters, no outer spaces)")
    return target


def _sample(target: str, base: Elems, ts: float, update: Any) -> CounterSample | None:
    """The interface counter reading of one update, None for other paths; ValueError if malformed."""
    if not isinstance(update, dict):
        raise ValueError(f"gNMI update {brief(update)} is not an object with 'path' and 'val'")
    elems = base + _elems(update.get("path"))
    names = [name for name, _ in elems]
    if "interface" not in names or "counters" not in names or names[-1] == "counters":
        return None
    interface = dict(elems)["interface"].get("name")
    if not interface:
        raise ValueError(f"interface path {brief('/'.join(names))} has no [name=...] key")
    sample = CounterSample(target, interface, names[-1], ts, _counter(update.get("val")))
    for what, name in (("source", sample.source), ("metric", sample.metric)):
        if not is_identifier(name):
            raise ValueError(f"{what} {brief(name)} of interface counter is not an identifier (1-256 characters)")
    return sample


def notification_samples(
    obj: dict[str, Any], bounds: EventTimeBounds, now: datetime | None = None
) -> tuple[list[CounterSample], dict[int, str]]:
    """Interface counter samples of one notification, and why each unusable update was rejected
    (by its index in the notification's ``update`` list); paths other than interface counters
    are ignored.

    Raises ValueError with a reason when the notification as a whole is unusable: no device, no
    timestamp or one outside ``bounds`` (the same plausibility rule as every other record), a
    malformed prefix or update list.
    """
    notification = obj["update"] if isinstance(obj.get("update"), dict) else obj
    ts = _timestamp(notification)
    if (reason := bounds.reason(ts, now)) is not None:
        raise ValueError(reason)
    prefix = notification.get("prefix")
    if prefix is not None and not isinstance(prefix, dict | str):
        raise ValueError(f"gNMI prefix {brief(prefix)} is not a path")
    target = _device(obj, prefix)
    base = _elems(prefix)
    updates = notification.get("update")
    updates = [] if updates is None else updates
    if not isinstance(updates, list):
        raise ValueError(f"gNMI notification 'update' must be a list of updates, not {brief(updates)}")
    samples: list[CounterSample] = []
    errors: dict[int, str] = {}
    for i, update in enumerate(updates):
        try:
            sample = _sample(target, base, ts, update)
        except ValueError as exc:
            errors[i] = str(exc)
            continue
        if sample is not None:
            samples.append(sample)
    return samples, errors


def counter_delta(previous: int, current: int) -> tuple[int, str]:
    """How much a counter grew between two readings, and how: 'ok', 'wrap' or 'reset'."""
    if current >= previous:
        return current - previous, "ok"
    if previous < _COUNTER32 and previous - current > _COUNTER32 // 2:
        return current + _COUNTER32 - previous, "wrap"
    if previous - current > _COUNTER64 // 2:
        return current + _COUNTER64 - previous, "wrap"
    return current, "reset"


class CounterRates:
    """Turns successive counter samples into rate records; keeps the last reading per counter."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}
        self.resets = 0
        self.wraps = 0

    def update(self, sample: CounterSample) -> TelemetryRecord | None:
        """The rate since the previous reading, or None for a first or out-of-order reading."""
        key = (sample.target, sample.interface, sample.counter)
        previous = self._last.get(key)
        if previous is not None and sample.ts <= previous[0]:
            return None
        self._last[key] = (sample.ts, sample.value)
        if previous is None:
            return None
        delta, kind = counter_delta(previous[1], sample.value)
        self.resets += kind == "reset"
        self.wraps += kind == "wrap"
        unit = "B/s" if sample.counter.endswith("octets") else "1/s"
        return TelemetryRecord(
            ts=datetime.fromtimestamp(sample.ts, UTC),
            source=sample.source,
            metric=sample.metric,
            value=delta / (sample.ts - previous[0]),
            unit=unit,
        )

    def snapshot(self) -> list[list[Any]]:
        return [[t, i, c, ts, v] for (t, i, c), (ts, v) in self._last.items()]

    def restore(self, state: list[list[Any]]) -> None:
        self._last = {(t, i, c): (ts, v) for t, i, c, ts, v in state}
