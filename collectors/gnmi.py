"""gNMI / OpenConfig interface counters: notifications in, per-second rates out.

Devices report cumulative counters (``/interfaces/interface[name=X]/state/counters/in-octets``).
What a forecaster needs is a rate, so consecutive samples of one counter become
``delta / elapsed``, with the two ways a counter goes backwards told apart: a *wrap* (a counter64,
or a counter32 on older gear, passed its maximum) and a *reset* (the device or line card
restarted and counts again from zero).

Accepted JSON forms:

- a gNMI ``SubscribeResponse`` or ``Notification`` in the protobuf JSON mapping
  (``{"update": {"timestamp": "…ns", "prefix": {...}, "update": [{"path": ..., "val":
  {"uintVal": "…"}}]}}``: what ``nmt collect gnmi`` publishes, and gnmic's ``protojson``), with
  paths as ``elem`` lists or as strings like ``interfaces/interface[name=eth0]/state/counters/in-octets``;
  JSON-encoded values (``jsonVal``, ``jsonIetfVal``: base64 in that mapping) may be a container,
  whose leaves count as the paths below it;
- gnmic's ``json`` format (``{"source": …, "timestamp": ns, "prefix": "/…", "updates": [{"Path":
  "/…[name=eth0]/…", "values": {"…": value}}]}``) and its ``event`` format (a list of, or with
  ``split-events`` one, ``{"name": …, "timestamp": ns, "tags": {"interface_name": "eth0", "source":
  …}, "values": {"/interfaces/interface/state/counters/in-octets": value}}``), as its Kafka output
  writes them; the device is ``target`` where gnmic set one, else gnmic's ``source``;
- sync responses (``{"syncResponse": true}``, gnmic's ``{"sync-response": true}``), which carry
  no reading and are accepted as such.

Notifications come from devices, so nothing about their shape is trusted: a malformed update is an
error of its own (the notification's other updates still count), a malformed or implausibly
dated notification an error as a whole, and neither ever an exception of another kind.
"""

# ruff: noqa: TRY004 - a malformed notification is a ValueError whatever its cause, with a reason:
# the decoder dead-letters every ValueError with its message, and only those.

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import TelemetryRecord, brief, is_identifier

_COUNTER32 = 1 << 32
_COUNTER64 = 1 << 64
_INT64 = 1 << 63
_PATH_ELEM = re.compile(r"([^/\[]+)((?:\[[^\]]*\])*)")
_PATH_KEY = re.compile(r"\[([^=\]]+)=([^\]]*)\]")
_DECIMAL = re.compile(r"-?[0-9]{1,20}")  # int64 / uint64 in the protobuf JSON mapping: a string
_INTEGER_FIELDS = ("uintVal", "intVal", "uint_val", "int_val")
_JSON_FIELDS = ("jsonVal", "json_val", "jsonIetfVal", "json_ietf_val")  # bytes: base64 in the protobuf JSON mapping
_SYNC_FIELDS = ("syncResponse", "sync_response", "sync-response")
_MAX_LEAVES = 4096  # leaves of one JSON-encoded value: a container of counters, not a device's whole tree

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


def is_event(obj: Any) -> bool:
    """Whether a decoded JSON object looks like one of gnmic's ``event`` messages."""
    return isinstance(obj, dict) and ("values" in obj or ("deletes" in obj and "tags" in obj)) and "updates" not in obj


def _is_gnmic_json(obj: dict[str, Any]) -> bool:
    return "timestamp" in obj and ("updates" in obj or "deletes" in obj)


def is_notification(obj: Any) -> bool:
    """Whether a decoded JSON value looks like a gNMI notification in one of the accepted forms
    (a SubscribeResponse or Notification, gnmic's ``json`` or ``event`` messages, a sync response)."""
    if isinstance(obj, list):
        return bool(obj) and all(is_event(item) for item in obj)
    if not isinstance(obj, dict):
        return False
    inner = obj.get("update")
    return (
        isinstance(inner, dict)
        or (isinstance(inner, list) and "timestamp" in obj)
        or any(f in obj for f in _SYNC_FIELDS)
        or _is_gnmic_json(obj)
        or is_event(obj)
    )


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


def _counter_value(raw: Any, shown: Any) -> int:
    """A counter reading in [0, 2**64) from an integer or a decimal string; ``shown`` is what the
    error quotes."""
    try:
        value = _integer(raw)
    except ValueError:
        raise ValueError(f"gNMI value {brief(shown)} is not an integer counter") from None
    if not 0 <= value < _COUNTER64:
        raise ValueError(f"gNMI counter {brief(value)} is outside [0, 2**64)")
    return value


def _json_bytes(raw: Any) -> Any:
    """The JSON value of a ``jsonVal``/``jsonIetfVal`` field: base64 of JSON in the protobuf JSON
    mapping. A value that is not base64 of JSON is returned as it is (a producer that wrote the
    JSON itself), for the integer check to judge."""
    if not isinstance(raw, str):
        return raw
    try:
        return orjson.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return raw


def _leaves(elems: Elems, value: Any, depth: int = 0) -> Iterator[tuple[Elems, Any]]:
    """The leaves of a JSON-encoded value: a container's members become the paths below it (YANG
    module prefixes dropped); lists of entries are not counters and are left out."""
    if not isinstance(value, dict):
        yield elems, value
        return
    if depth >= 8:
        raise ValueError("gNMI JSON value nests deeper than 8 containers")
    for key, member in value.items():
        if isinstance(member, list):
            continue
        yield from _leaves([*elems, (str(key).rsplit(":", 1)[-1], {})], member, depth + 1)


def _typed_value(val: Any) -> Any:
    """The reading in a TypedValue (or a bare value): an integer field, or decoded JSON."""
    if not isinstance(val, dict):
        return val
    for f in _INTEGER_FIELDS:
        if f in val:
            return val[f]
    for f in _JSON_FIELDS:
        if f in val and not isinstance(val[f], dict | list):
            return _json_bytes(val[f])
    raise ValueError(f"gNMI value {brief(val)} is not an integer counter")


def _json_container(val: Any) -> dict[str, Any] | None:
    """The container a TypedValue holds JSON-encoded, if it holds one."""
    if isinstance(val, dict) and isinstance(raw := next((val[f] for f in _JSON_FIELDS if f in val), None), str):
        decoded = _json_bytes(raw)
        return decoded if isinstance(decoded, dict) else None
    return None


def _names(elems: Elems) -> list[str]:
    """The element names of a path without YANG module prefixes (``openconfig-interfaces:interface``)."""
    return [name.rsplit(":", 1)[-1] for name, _ in elems]


def _is_counter_leaf(names: list[str]) -> bool:
    return "interface" in names and "counters" in names and names[-1] != "counters"


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


def xpath_elems(path: str) -> Elems:
    """A path written as a string (``/interfaces/interface[name=eth0]/state``) as (name, keys) pairs."""
    return [(m.group(1), dict(_PATH_KEY.findall(m.group(2)))) for m in _PATH_ELEM.finditer(path.strip("/"))]


def _elems(path: Any) -> Elems:
    """A path as (name, keys) pairs: a gNMI Path object or a gnmic-style string."""
    if path is None:
        return []
    if isinstance(path, str):
        return xpath_elems(path)
    if isinstance(path, dict):
        elems = path.get("elem") or []
        if not isinstance(elems, list):
            raise ValueError(f"gNMI path 'elem' must be a list, not {brief(elems)}")
        return [_elem(e) for e in elems]
    raise ValueError(f"unsupported gNMI path {brief(path)}")


def _device(*candidates: Any) -> str:
    """The device a notification is from: the first name given (``prefix.target``, gnmic's
    ``target`` or ``source``)."""
    target = next((c for c in candidates if c), None)
    if not target:
        raise ValueError("gNMI notification names no device: set prefix.target (or 'source')")
    if not is_identifier(target):
        raise ValueError(f"gNMI device {brief(target)} is not an identifier (1-256 characters, no outer spaces)")
    return target


def _samples(target: str, elems: Elems, ts: float, value: Any) -> list[CounterSample]:
    """The interface counter readings at ``elems`` holding ``value`` (a container gives one per
    leaf); other paths give none. ValueError if a reading is malformed."""
    samples = []
    for path, reading in _leaves(elems, value):
        names = _names(path)
        if not _is_counter_leaf(names):
            continue
        interface = path[names.index("interface")][1].get("name")
        if not interface:
            raise ValueError(f"interface path {brief('/'.join(names))} has no [name=...] key")
        if "subinterface" in names and (index := path[names.index("subinterface")][1].get("index")):
            interface = f"{interface}.{index}"  # a subinterface's counters are a series of their own
        sample = CounterSample(target, interface, names[-1], ts, _counter_value(reading, value))
        for what, name in (("source", sample.source), ("metric", sample.metric)):
            if not is_identifier(name):
                raise ValueError(f"{what} {brief(name)} of interface counter is not an identifier (1-256 characters)")
        samples.append(sample)
        if len(samples) > _MAX_LEAVES:
            raise ValueError(f"gNMI value holds more than {_MAX_LEAVES} counters")
    return samples


def _update_samples(target: str, base: Elems, ts: float, update: Any) -> list[CounterSample]:
    """The interface counter readings of one protobuf-JSON update: a counter leaf's value, or the
    counters in a JSON-encoded container above them (``/interfaces/interface[name=eth0]/state``)."""
    if not isinstance(update, dict):
        raise ValueError(f"gNMI update {brief(update)} is not an object with 'path' and 'val'")
    elems = base + _elems(update.get("path"))
    names = _names(elems)
    if "interface" not in names:
        return []
    val = update.get("val")
    if _is_counter_leaf(names):
        return _samples(target, elems, ts, _typed_value(val))
    container = _json_container(val)
    return [] if container is None else _samples(target, elems, ts, container)


def _gnmic_update_samples(target: str, base: Elems, ts: float, update: Any) -> list[CounterSample]:
    """The interface counter readings of one update of gnmic's ``json`` format: its ``Path`` (with
    keys) holds the single value in ``values``, already decoded."""
    if not isinstance(update, dict) or not isinstance(update.get("values"), dict):
        raise ValueError(f"gnmic update {brief(update)} is not an object with 'Path' and 'values'")
    path = update.get("Path", update.get("path"))
    if not isinstance(path, str):
        raise ValueError(f"gnmic update path {brief(path)} is not a string")
    elems = base + xpath_elems(path)
    return [s for value in update["values"].values() for s in _samples(target, elems, ts, value)]


def _indexed(items: list[Any], read: Any) -> tuple[list[CounterSample], dict[int, str]]:
    """Apply ``read`` to every item: the samples of those that were usable, and the reason for each
    that was not, by index."""
    samples: list[CounterSample] = []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            samples.extend(read(item))
        except ValueError as exc:
            errors[i] = str(exc)
    return samples, errors


def _list_field(obj: dict[str, Any], name: str, what: str) -> list[Any]:
    items = obj.get(name)
    items = [] if items is None else items
    if not isinstance(items, list):
        raise ValueError(f"{what} '{name}' must be a list of updates, not {brief(items)}")
    return items


def _dated(obj: dict[str, Any], bounds: EventTimeBounds, now: datetime | None) -> float:
    ts = _timestamp(obj)
    if (reason := bounds.reason(ts, now)) is not None:
        raise ValueError(reason)
    return ts


def _event_samples(event: Any, bounds: EventTimeBounds, now: datetime | None) -> list[CounterSample]:
    """The interface counter readings of one gnmic ``event``: its value names are paths without
    keys, and gnmic wrote each key as the tag ``<element>_<key>`` (``interface_name``)."""
    if not isinstance(event, dict):
        raise ValueError(f"gnmic event {brief(event)} is not an object")
    tags, values = event.get("tags") or {}, event.get("values") or {}
    if not isinstance(tags, dict) or not isinstance(values, dict):
        raise ValueError("gnmic event 'tags' and 'values' must be objects")
    if not values:
        return []  # deletes only
    ts = _dated(event, bounds, now)
    target = _device(tags.get("target"), tags.get("source"))
    samples = []
    for name, value in values.items():
        elems = [
            (n, {k[len(n) + 1 :]: str(v) for k, v in tags.items() if k.startswith(f"{n.rsplit(':', 1)[-1]}_")})
            for n, _ in xpath_elems(str(name))
        ]
        samples.extend(_samples(target, elems, ts, value))
    return samples


def notification_samples(
    obj: Any, bounds: EventTimeBounds, now: datetime | None = None
) -> tuple[list[CounterSample], dict[int, str]]:
    """Interface counter samples of one notification, in any accepted form, and why each unusable
    update (or event) was rejected, by its index in the notification's list of updates (or
    events); paths other than interface counters are ignored.

    Raises ValueError with a reason when the notification as a whole is unusable: no device, no
    timestamp or one outside ``bounds`` (the same plausibility rule as every other record), a
    malformed prefix or update list.
    """
    if isinstance(obj, list) or is_event(obj):
        events = obj if isinstance(obj, list) else [obj]
        if not isinstance(obj, list):
            return _event_samples(obj, bounds, now), {}
        return _indexed(events, lambda e: _event_samples(e, bounds, now))
    if any(f in obj for f in _SYNC_FIELDS) and "update" not in obj:
        return [], {}
    if _is_gnmic_json(obj):
        ts = _dated(obj, bounds, now)
        target = _device(obj.get("target"), obj.get("source"))
        prefix = obj.get("prefix") or ""
        if not isinstance(prefix, str):
            raise ValueError(f"gnmic prefix {brief(prefix)} is not a path")
        base = xpath_elems(prefix)
        updates = _list_field(obj, "updates", "gnmic message")
        return _indexed(updates, lambda u: _gnmic_update_samples(target, base, ts, u))
    notification = obj["update"] if isinstance(obj.get("update"), dict) else obj
    ts = _dated(notification, bounds, now)
    prefix = notification.get("prefix")
    if prefix is not None and not isinstance(prefix, dict | str):
        raise ValueError(f"gNMI prefix {brief(prefix)} is not a path")
    target = _device(prefix.get("target") if isinstance(prefix, dict) else None, obj.get("source"))
    base = _elems(prefix)
    updates = _list_field(notification, "update", "gNMI notification")
    return _indexed(updates, lambda u: _update_samples(target, base, ts, u))


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
