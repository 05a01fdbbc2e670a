"""Poison messages: inputs every stream service must dead-letter, never crash on or accept.

Each list holds ``(name, raw message value)`` pairs, ``None`` standing for a Kafka null value.
They come from a fault test of the decoders plus the classic shapes of bad input (random bytes,
invalid UTF-8, truncated and deeply nested JSON, huge strings); the unit tests run them through the
pure decoders and the Kafka tests feed them to the services on a real broker. Every entry here must
be rejected with a reason: add to these lists, never put something a service may accept in them.

A plain module (no tests), deterministic: the random bytes come from a fixed seed.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

Poison = list[tuple[str, bytes | None]]

NOW_ISH = "2024-01-01T00:00:00Z"  # a plausible time for any clock from 2024 on
NOW_ISH_NS = 1_704_067_200 * 10**9
YEAR_2255_S = 8_993_721_600  # 2255-01-01T00:00:00Z
DEEP = 100_000  # far past orjson's (1024) and Python's (1000) nesting limits
HUGE_CHARS = 200_000  # U+10FFFF is 4 bytes of UTF-8: 800 kB, under the 1 MiB message limit

COUNTER_PATH = "interfaces/interface[name=eth0]/state/counters/in-octets"
GOOD_RECORD: dict[str, Any] = {"ts": NOW_ISH, "source": "cell-1", "metric": "traffic", "value": 1.5}


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _record(**changes: Any) -> bytes:
    return _json({**GOOD_RECORD, **changes})


def _literal(obj: dict[str, Any], field: str, literal: bytes) -> bytes:
    """``obj`` with ``field`` written as a literal orjson will not write (NaN, 1e400, 10**40)."""
    return _json({**obj, field: 0}).replace(f'"{field}":0'.encode(), f'"{field}":'.encode() + literal)


def _columns(**changes: Any) -> bytes:
    columns = {"ts": [1_704_067_200.0], "source": ["cell-1"], "metric": ["traffic"], "value": [1.5]}
    extra = {k: changes.pop(k) for k in ("unit", "location") if k in changes}
    return _json({"columns": {**columns, **changes}, **extra})


def _gnmi(
    *,
    timestamp: Any = str(NOW_ISH_NS),
    prefix: Any = None,
    updates: Any = None,
    path: Any = COUNTER_PATH,
    val: Any = None,
) -> bytes:
    """A SubscribeResponse of one interface counter update, with any part replaced."""
    if prefix is None:
        prefix = {"target": "r1"}
    if updates is None:
        updates = [{"path": path, "val": {"uintVal": "1000"} if val is None else val}]
    return _json({"update": {"timestamp": timestamp, "prefix": prefix, "update": updates}})


def _elem_path(*elems: Any) -> dict[str, Any]:
    return {"elem": [{"name": "interfaces"}, *elems, {"name": "state"}, {"name": "counters"}, {"name": "in-octets"}]}


def _random_bytes(seed: int, count: int) -> Poison:
    rng = random.Random(seed)
    return [(f"random bytes #{i}", rng.randbytes(rng.randint(1, 4096))) for i in range(count)]


DEEP_ARRAYS = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
HUGE_STRING = "\U0010ffff" * HUGE_CHARS


POISON_TELEMETRY: Poison = [
    # empty messages (vector 4)
    ("kafka null value", None),
    ("empty message", b""),
    ("blank lines", b"\n\n   \n\t\n"),
    ("whitespace", b"    "),
    # timestamps (vectors 1 and 3)
    ("ts year 1 east of UTC", _record(ts="0001-01-01T00:00:00+05:00")),
    ("ts year 9999 west of UTC", _record(ts="9999-12-31T23:59:59-05:00")),
    ("ts year 1", _record(ts="0001-01-01T00:00:00Z")),
    ("ts year 9999", _record(ts="9999-12-31T23:59:59Z")),
    ("ts year 2255", _record(ts="2255-01-01T00:00:00Z")),
    ("ts epoch 1e300", _record(ts=1e300)),
    ("ts boolean", _record(ts=True)),
    ("ts null", _record(ts=None)),
    # values (vectors 5 and 6)
    ("value as a string", _record(value="12.5")),
    ("value true", _record(value=True)),
    ("value false", _record(value=False)),
    ("value null", _record(value=None)),
    ("value NaN string", _record(value="NaN")),
    ("value 1e300", _record(value=1e300)),
    ("value past the float range", _literal(GOOD_RECORD, "value", b"1e400")),
    ("value integer 10**40", _literal(GOOD_RECORD, "value", b"1" + b"0" * 40)),
    ("values whose sum overflows", _json([{**GOOD_RECORD, "value": 1e308}, {**GOOD_RECORD, "value": 1e308}])),
    # the columnar form (vectors 5, 6 and 8)
    ("columnar value string", _columns(value=["12.5"])),
    ("columnar value true", _columns(value=[True])),
    ("columnar value 1e300", _columns(value=[1e300])),
    ("columnar value null", _columns(value=[None])),
    ("columnar ts not a number", _columns(ts=["yesterday"])),
    ("columnar ts true", _columns(ts=[True])),
    ("columnar ts year 2255", _columns(ts=[float(YEAR_2255_S)])),
    ("columnar ts 1e300", _columns(ts=[1e300])),
    ("columnar huge source", _columns(source=[HUGE_STRING[:1000]])),
    ("columnar bad location", _columns(location={"lat": 123})),
    ("columnar location not an object", _columns(location=[1])),
    ("columnar unit not a string", _columns(unit=5)),
    ("columnar ragged", _json({"columns": {"ts": [1.7e9, 1.7e9], "source": ["a"], "metric": ["m"], "value": [1]}})),
    ("columnar columns not an object", _json({"columns": [1, 2]})),
    # gNMI notifications (vectors 2 and 3)
    ("gnmi update list of strings", _gnmi(updates=["a", "b"])),
    ("gnmi update a dict", _gnmi(updates={"path": "x", "val": 1})),
    ("gnmi update a string", _gnmi(updates="interfaces")),
    ("gnmi elem without name", _gnmi(path=_elem_path({"key": {"name": "eth0"}}))),
    ("gnmi elem name not a string", _gnmi(path=_elem_path({"name": ["interface"], "key": {"name": "eth0"}}))),
    ("gnmi elem not a list", _gnmi(path={"elem": "interfaces"})),
    ("gnmi elem entries not objects", _gnmi(path={"elem": [1, 2]})),
    ("gnmi elem key not an object", _gnmi(path=_elem_path({"name": "interface", "key": "eth0"}))),
    ("gnmi elem key values not strings", _gnmi(path=_elem_path({"name": "interface", "key": {"name": {"a": 1}}}))),
    ("gnmi path a number", _gnmi(path=5)),
    ("gnmi interface without name", _gnmi(path="interfaces/interface/state/counters/in-octets")),
    ("gnmi interface name too long", _gnmi(path=f"interfaces/interface[name={'e' * 300}]/state/counters/in-octets")),
    ("gnmi val null", _gnmi(updates=[{"path": COUNTER_PATH, "val": None}])),
    ("gnmi val missing", _gnmi(updates=[{"path": COUNTER_PATH}])),
    ("gnmi jsonVal an object", _gnmi(val={"jsonVal": {"a": 1}})),
    ("gnmi uintVal a fraction", _gnmi(val={"uintVal": 1.5})),
    ("gnmi uintVal true", _gnmi(val={"uintVal": True})),
    ("gnmi uintVal not decimal", _gnmi(val={"uintVal": "1e3"})),
    ("gnmi uintVal negative", _gnmi(val={"intVal": "-5"})),
    ("gnmi uintVal past 2**64", _gnmi(val={"uintVal": "18446744073709551616"})),
    ("gnmi uintVal 5000 digits", _gnmi(val={"uintVal": "9" * 5000})),
    ("gnmi val a string value", _gnmi(val={"stringVal": "up"})),
    ("gnmi val a list", _gnmi(val=[1])),
    ("gnmi prefix a list", _gnmi(prefix=[1, 2])),
    ("gnmi prefix a number", _gnmi(prefix=5)),
    ("gnmi prefix elem broken", _gnmi(prefix={"target": "r1", "elem": [{"key": {}}]})),
    ("gnmi no target", _gnmi(prefix={"elem": []})),
    ("gnmi target an object", _gnmi(prefix={"target": {"name": "r1"}})),
    ("gnmi target too long", _gnmi(prefix={"target": "r" * 300})),
    ("gnmi timestamp an object", _gnmi(timestamp={"seconds": 1})),
    ("gnmi timestamp true", _gnmi(timestamp=True)),
    ("gnmi timestamp a float", _gnmi(timestamp=1.7e18)),
    ("gnmi timestamp 1e300", _gnmi(timestamp=1e300)),
    ("gnmi timestamp past int64", _gnmi(timestamp="99999999999999999999")),
    ("gnmi timestamp 5000 digits", _gnmi(timestamp="9" * 5000)),
    ("gnmi timestamp negative", _gnmi(timestamp=-1)),
    ("gnmi timestamp year 1970", _gnmi(timestamp=10**9)),
    ("gnmi timestamp year 2255", _gnmi(timestamp=str(YEAR_2255_S * 10**9))),
    ("gnmi timestamp missing", _json({"update": {"prefix": {"target": "r1"}, "update": []}})),
    ("gnmi empty notification", _json({"update": {}})),
    ("gnmi top-level form, bad update", _json({"timestamp": NOW_ISH_NS, "source": "r1", "update": [None]})),
    # malformed bytes and JSON
    *_random_bytes(seed=20240601, count=8),
    ("invalid UTF-8", b'{"ts": "2024-01-01T00:00:00Z", "source": "\xff\xfe", "metric": "m", "value": 1}'),
    ("lone surrogate", b'{"ts": "2024-01-01T00:00:00Z", "source": "\xed\xa0\x80", "metric": "m", "value": 1}'),
    ("invalid UTF-8 in JSON lines", _record() + b"\n" + b'{"source": "\xff"}'),
    ("truncated JSON", _record()[:-7]),
    ("truncated batch", _json({"records": [GOOD_RECORD] * 3})[:-20]),
    ("JSON lines with a bad line", _record() + b"\n{oops\n" + _record()),
    ("JSON lines of arrays", b"[1]\n[2]"),
    ("deeply nested arrays", DEEP_ARRAYS),
    ("deeply nested objects", DEEP_OBJECTS),
    ("nested 1000 levels in a record", _record()[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"),
    ("nested 1000 levels at top level", b"[" * 1000 + b"]" * 1000),
    ("top-level number", b"42"),
    ("top-level float", b"1.5"),
    ("top-level string", b'"just a string"'),
    ("top-level null", b"null"),
    ("top-level true", b"true"),
    ("array of scalars", b"[1, 2, 3]"),
    ("empty object", b"{}"),
    ("records not a list", _json({"records": {"a": 1}})),
    ("NaN literal", _literal(GOOD_RECORD, "value", b"NaN")),
    ("huge U+10FFFF source", _record(source=HUGE_STRING)),
    ("huge U+10FFFF field name", _json({**GOOD_RECORD, HUGE_STRING: 1})),
    ("huge U+10FFFF value", _record(value=HUGE_STRING)),
]

GOOD_POINT: dict[str, Any] = {
    "source": "cell-1",
    "metric": "traffic",
    "window_start": NOW_ISH,
    "window_seconds": 3600,
    "count": 3,
    "sum": 3.0,
    "min": 1.0,
    "max": 1.0,
}


def _point(**changes: Any) -> bytes:
    return _json({**GOOD_POINT, **changes})


POISON_SERIES: Poison = [
    ("kafka null value", None),
    ("empty message", b""),
    ("not JSON", b"not json"),
    ("not UTF-8", b'{"source": "\xff"}'),
    ("JSON null", b"null"),
    ("deeply nested arrays", DEEP_ARRAYS),
    ("missing fields", _json({"source": "cell-1"})),
    ("sum NaN", _literal(GOOD_POINT, "sum", b"NaN")),
    ("sum Infinity", _literal(GOOD_POINT, "sum", b"Infinity")),
    ("max -Infinity", _literal(GOOD_POINT, "max", b"-Infinity")),
    ("sum null", _point(sum=None)),
    ("window_start year 1", _point(window_start="0001-01-01T00:00:00Z")),
    ("window_start year 1 east of UTC", _point(window_start="0001-01-01T00:00:00+05:00")),
    ("window_start year 9999", _point(window_start="9999-12-31T00:00:00Z", window_seconds=1)),
    ("window_start year 9999 west of UTC", _point(window_start="9999-12-31T23:59:59-05:00")),
    ("window_seconds 0", _point(window_seconds=0)),
    ("window_seconds negative", _point(window_seconds=-3600)),
    ("count 0", _point(count=0)),
    ("count negative", _point(count=-1)),
]

GOOD_PROMPT: dict[str, Any] = {"request_id": "p-1", "text": "stream 4k video at the stadium", "location": "cell-1"}


def _prompt(**changes: Any) -> bytes:
    return _json({**GOOD_PROMPT, **changes})


POISON_PROMPTS: Poison = [
    ("kafka null value", None),
    ("empty message", b""),
    ("not UTF-8", b'{"request_id": "p-1", "text": "\xff\xfe", "location": "cell-1"}'),
    ("not JSON", b"stream video please"),
    ("JSON null", b"null"),
    ("ts year 1 east of UTC", _prompt(ts="0001-01-01T00:00:00+05:00")),
    ("ts year 9999 west of UTC", _prompt(ts="9999-12-31T23:59:59-05:00")),
    ("missing request_id", _json({k: v for k, v in GOOD_PROMPT.items() if k != "request_id"})),
    ("missing text", _json({k: v for k, v in GOOD_PROMPT.items() if k != "text"})),
    ("missing location", _json({k: v for k, v in GOOD_PROMPT.items() if k != "location"})),
    ("empty text", _prompt(text="")),
    ("blank text", _prompt(text="   ")),
    ("deeply nested arrays", DEEP_ARRAYS),
    ("deeply nested objects", DEEP_OBJECTS),
    ("nested text", _prompt(text={"text": {"text": "video"}})),
]

GOOD_CLOUD_REQUEST: dict[str, Any] = {
    "request_id": "c-1", "text": "Recommend a cafe near me in Brera this morning.", "edge": "edge-0",
    "edge_sent_ms": 1_704_067_200_000, "arrived_ms": 1_704_067_200_000,
}  # fmt: skip


def _cloud(**changes: Any) -> bytes:
    return _json({**GOOD_CLOUD_REQUEST, **changes})


POISON_CLOUD_REQUESTS: Poison = [
    ("kafka null value", None),
    ("empty message", b""),
    ("not UTF-8", b'{"request_id": "c-1", "text": "\xff\xfe"}'),
    ("not JSON", b"answer this"),
    ("JSON array", b"[1, 2]"),
    ("deeply nested arrays", DEEP_ARRAYS),
    ("deeply nested objects", DEEP_OBJECTS),
    ("missing request_id", _json({k: v for k, v in GOOD_CLOUD_REQUEST.items() if k != "request_id"})),
    ("missing edge", _json({k: v for k, v in GOOD_CLOUD_REQUEST.items() if k != "edge"})),
    ("a field the edge may not send", _cloud(cell="MI-1234")),
    ("unknown kind", _cloud(kind="shutdown")),
    ("text not a string", _cloud(text={"text": "x"})),
    ("text too long", _cloud(text="x" * 5000)),
    ("edge_sent_ms not a number", _cloud(edge_sent_ms="soon")),
    ("huge padding", _cloud(kind="probe", padding="x" * 1_000_001)),
]
