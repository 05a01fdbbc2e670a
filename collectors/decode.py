"""Bytes from the telemetry topic to validated records, with a reason for everything rejected.

A message may hold one record (a JSON object), many (``{"records": [...]}`` or a JSON array),
JSON lines, or a gNMI notification of interface counters. Decoding is pure: it never drops
anything silently; every record it cannot use comes back as a :class:`RecordError` with its index
in the message, so the collector can dead-letter it with the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from collectors.columnar import ColumnarBatch, is_columnar, parse_columns
from collectors.gnmi import CounterSample, is_notification, notification_samples
from nm_toolkit.schemas import TelemetryRecord

_RECORDS = TypeAdapter(list[TelemetryRecord])
_RECORD = TypeAdapter(TelemetryRecord)


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why a message, or the record at ``index`` inside it, was rejected."""

    reason: str
    index: int | None = None


@dataclass(slots=True)
class Decoded:
    records: list[TelemetryRecord] = field(default_factory=list)
    counters: list[CounterSample] = field(default_factory=list)
    columns: ColumnarBatch | None = None
    errors: list[RecordError] = field(default_factory=list)


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class TelemetryDecoder:
    """Decode and validate telemetry messages.

    ``min_timestamp`` and ``max_future_seconds`` bound plausible event times: a record from 1970
    or next year is a broken clock, and aggregating it would open a window nobody will close.
    """

    max_message_bytes: int = 1_048_576
    min_timestamp: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future_seconds: float = 86_400.0

    def decode(self, raw: bytes, now: datetime | None = None) -> Decoded:
        out = Decoded()
        if len(raw) > self.max_message_bytes:
            out.errors.append(
                RecordError(f"message of {len(raw)} bytes exceeds the {self.max_message_bytes}-byte limit")
            )
            return out
        now = now or datetime.now(UTC)
        earliest = self.min_timestamp.timestamp()
        latest = now.timestamp() + self.max_future_seconds
        try:
            items = self._items(raw, out, earliest, latest)
        except ValueError as exc:
            out.errors.append(RecordError(str(exc)))
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
        for i, record in indexed:
            ts = record.ts.timestamp()
            if earliest <= ts <= latest:
                out.records.append(record)
            else:
                out.errors.append(
                    RecordError(
                        f"ts: {record.ts.isoformat()} is outside the plausible range "
                        f"[{self.min_timestamp.isoformat()}, now + {self.max_future_seconds:.0f} s]",
                        i,
                    )
                )
        return out

    def _items(self, raw: bytes, out: Decoded, earliest: float, latest: float) -> list[Any] | None:
        """The list of record objects in a message; gNMI samples go to ``out.counters`` and
        columnar batches to ``out.columns``."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            lines = raw.splitlines()
            if len(lines) < 2:
                raise ValueError(f"invalid JSON: {exc}") from exc
            obj = []
            for i, line in enumerate(lines):
                if line.strip():
                    try:
                        obj.append(orjson.loads(line))
                    except orjson.JSONDecodeError as line_exc:
                        raise ValueError(f"invalid JSON on line {i + 1}: {line_exc}") from line_exc
        if is_columnar(obj):
            out.columns, errors = parse_columns(obj, earliest, latest)
            out.errors.extend(RecordError(reason, i) for i, reason in sorted(errors.items()))
            return None
        if isinstance(obj, dict) and "records" in obj:
            obj = obj["records"]
            if not isinstance(obj, list):
                raise ValueError("'records' must be a list of telemetry records")
        if is_notification(obj):
            out.counters.extend(notification_samples(obj))
            return None
        if isinstance(obj, dict):
            return [obj]
        if isinstance(obj, list):
            return obj
        raise ValueError(f"expected a JSON object or array of telemetry records, got {type(obj).__name__}")
