"""Bytes from the telemetry topic to validated records, with a reason for everything rejected.

A message may hold one record (a JSON object), many (``{"records": [...]}`` or a JSON array),
JSON lines, a columnar batch, or a gNMI notification of interface counters. Decoding is pure: it
never drops anything silently, and never raises, whatever the bytes (an empty message included);
every record it cannot use comes back as a :class:`RecordError` with a one-line reason and its
index in the message, so the collector can dead-letter it with the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from collectors.columnar import ColumnarBatch, is_columnar, parse_columns
from collectors.gnmi import CounterSample, is_notification, notification_samples
from nm_toolkit.bus.deadletter import RecordError
from nm_toolkit.errors import validation_reason
from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import TelemetryRecord

_RECORDS = TypeAdapter(list[TelemetryRecord])
_RECORD = TypeAdapter(TelemetryRecord)
_JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


@dataclass(slots=True)
class Decoded:
    records: list[TelemetryRecord] = field(default_factory=list)
    counters: list[CounterSample] = field(default_factory=list)
    columns: ColumnarBatch | None = None
    errors: list[RecordError] = field(default_factory=list)


def error_reason(exc: ValueError) -> str:
    """The one-line reason of a rejected message, whether pydantic or our own checks refused it."""
    return validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)


def parse_json(raw: bytes) -> Any:
    """The JSON value of a message: one document, or the documents of JSON lines as a list.

    Raises ValueError for an empty or blank message (a Kafka null value arrives as ``b""``): it
    holds no record, and accepting it would let a broken producer go unnoticed.
    """
    try:
        return orjson.loads(raw)  # rejects invalid UTF-8 and nesting deeper than 1024 levels
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            raise ValueError("empty message: no JSON in it") from None
        lines = raw.splitlines()
        if len(lines) < 2:
            raise ValueError(f"invalid JSON: {exc}") from None
        documents = []
        for i, line in enumerate(lines):
            if line.strip():
                try:
                    documents.append(orjson.loads(line))
                except orjson.JSONDecodeError as line_exc:
                    raise ValueError(f"invalid JSON on line {i + 1}: {line_exc}") from None
        return documents


@dataclass(frozen=True)
class TelemetryDecoder:
    """Decode and validate telemetry messages.

    ``min_timestamp`` and ``max_future_seconds`` bound plausible event times
    (:class:`~nm_toolkit.eventtime.EventTimeBounds`): a record from 1970 or next year is a broken
    clock, and aggregating it would open a window nobody will close.
    """

    max_message_bytes: int = 1_048_576
    min_timestamp: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future_seconds: float = 86_400.0
    bounds: EventTimeBounds = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", EventTimeBounds(self.min_timestamp, self.max_future_seconds))

    def decode(self, raw: bytes | None, now: datetime | None = None) -> Decoded:
        """Every record of a message, or why not; never raises for any input.

        ``None`` (a Kafka null value) is treated as the empty message it is.
        """
        out = Decoded()
        raw = raw or b""
        if len(raw) > self.max_message_bytes:
            out.errors.append(
                RecordError(f"message of {len(raw)} bytes exceeds the {self.max_message_bytes}-byte limit")
            )
            return out
        now = now or datetime.now(UTC)
        try:
            items = self._items(raw, out, now)
        except ValueError as exc:
            out.errors.append(RecordError(error_reason(exc)))
            return out
        if items is None:
            return out
        try:
            records = _RECORDS.validate_python(items)
            indexed = list(enumerate(records))
        except ValidationError:
            indexed = []
            for i, item in enumerate(items):
                try:
                    indexed.append((i, _RECORD.validate_python(item)))
                except ValidationError as exc:
                    out.errors.append(RecordError(validation_reason(exc), i))
        earliest, latest = self.bounds.limits(now)
        for i, record in indexed:
            if earliest <= record.ts.timestamp() <= latest:
                out.records.append(record)
            else:
                out.errors.append(RecordError(self.bounds.outside(record.ts), i))
        return out

    def _items(self, raw: bytes, out: Decoded, now: datetime) -> list[Any] | None:
        """The list of record objects in a message; gNMI samples go to ``out.counters`` and
        columnar batches to ``out.columns``, with their per-row errors in ``out.errors``."""
        obj = parse_json(raw)
        if is_columnar(obj):
            out.columns, errors = parse_columns(obj, self.bounds, now)
            out.errors.extend(RecordError(reason, i) for i, reason in sorted(errors.items()))
            return None
        if isinstance(obj, dict) and "records" in obj:
            obj = obj["records"]
            if not isinstance(obj, list):
                raise ValueError("'records' must be a list of telemetry records")
        if is_notification(obj):
            samples, errors = notification_samples(obj, self.bounds, now)
            out.counters.extend(samples)
            out.errors.extend(RecordError(reason, i) for i, reason in sorted(errors.items()))
            return None
        if isinstance(obj, dict):
            return [obj]
        if isinstance(obj, list):
            return obj
        raise ValueError(f"expected a JSON object or array of telemetry records, got {_JSON_TYPES.get(type(obj), 'a scalar')}")
