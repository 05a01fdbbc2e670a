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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nm_toolkit.schemas import TelemetryRecord

_COUNTER32 = 1 << 32
_COUNTER64 = 1 << 64
_PATH_ELEM = re.compile(r"([^/\[]+)((?:\[[^\]]*\])*)")
_PATH_KEY = re.compile(r"\[([^=\]]+)=([^\]]*)\]")


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One reading of one cumulative counter of one interface of one device."""

    target: str
    interface: str
    counter: str
    ts: float
    value: int


def is_notification(obj: Any) -> bool:
    """Whether a decoded JSON object looks like a gNMI SubscribeResponse or Notification."""
    if not isinstance(obj, dict):
        return False
    inner = obj.get("update")
    return isinstance(inner, dict) or (isinstance(inner, list) and "timestamp" in obj)


def _elems(path: Any) -> list[tuple[str, dict[str, str]]]:
    if path is None:
        return []
    if isinstance(path, str):
        return [(m.group(1), dict(_PATH_KEY.findall(m.group(2)))) for m in _PATH_ELEM.finditer(path.strip("/"))]
    if isinstance(path, dict):
        elems = path.get("elem") or []
        return [(str(e["name"]), {str(k): str(v) for k, v in (e.get("key") or {}).items()}) for e in elems]
    raise ValueError(f"unsupported gNMI path {path!r}")


def _value(val: Any) -> int:
    if not isinstance(val, dict):
        return int(val)
    for field in ("uintVal", "intVal", "uint_val", "int_val"):
        if field in val:
            return int(val[field])
    for field in ("jsonVal", "json_val", "jsonIetfVal"):
        if field in val:
            return int(val[field])
    raise ValueError(f"gNMI value {val!r} is not an integer counter")


def notification_samples(obj: dict[str, Any]) -> list[CounterSample]:
    """Interface counter samples of one notification; other paths are ignored.

    Raises ValueError with a reason when the notification is malformed.
    """
    notification = obj["update"] if isinstance(obj.get("update"), dict) else obj
    try:
        ts = int(notification["timestamp"]) / 1e9
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("gNMI notification needs an integer 'timestamp' in nanoseconds") from exc
    prefix = notification.get("prefix") or {}
    target = (prefix.get("target") if isinstance(prefix, dict) else None) or obj.get("source")
    if not target:
        raise ValueError("gNMI notification names no device: set prefix.target (or 'source')")
    base = _elems(prefix)
    samples = []
    for update in notification.get("update") or []:
        elems = base + _elems(update.get("path"))
        names = [name for name, _ in elems]
        if "interface" not in names or "counters" not in names or names[-1] == "counters":
            continue
        interface = dict(elems)["interface"].get("name")
        if not interface:
            raise ValueError(f"interface path {'/'.join(names)} has no [name=...] key")
        samples.append(CounterSample(str(target), interface, names[-1], ts, _value(update.get("val"))))
    return samples


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
            source=f"{sample.target}/{sample.interface}",
            metric=f"{sample.counter.replace('-', '_')}_per_s",
            value=delta / (sample.ts - previous[0]),
            unit=unit,
        )

    def snapshot(self) -> list[list[Any]]:
        return [[t, i, c, ts, v] for (t, i, c), (ts, v) in self._last.items()]

    def restore(self, state: list[list[Any]]) -> None:
        self._last = {(t, i, c): (ts, v) for t, i, c, ts, v in state}
