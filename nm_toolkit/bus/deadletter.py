"""The one dead-letter convention every stream service follows.

A dead-letter record keeps the original message's bytes as its value and its key, so the message
can be inspected or replayed as it was; why it was rejected and where it came from travel in
``nmt.error.*`` headers. The record must also reach the broker: a message just under the broker's
size limit plus headers quoting it would be refused, and a producer that keeps failing would stop
the service. So reasons are cut to one short line, and when value and headers together would not
fit, the value is cut to fit and ``nmt.error.truncated`` says how long the original was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from nm_toolkit.bus.base import Headers, Message

REASON = "nmt.error.reason"
"""Why the message was rejected (the first problem, one line)."""
RECORDS = "nmt.error.records"
"""JSON list of ``{"index", "reason"}`` for the bad records inside a batch message."""
COUNT = "nmt.error.count"
"""How many records of the message were bad (exact, even when ``records`` is cut short)."""
ORIGIN = "nmt.error.origin"
"""``topic/partition/offset`` of the original message."""
SERVICE = "nmt.error.service"
"""The service that rejected it."""
TRUNCATED = "nmt.error.truncated"
"""Present when the value was cut to fit the broker's limit: the original length in bytes."""

MAX_REASON_CHARS = 500
MAX_RECORD_ERRORS = 100
RECORD_OVERHEAD_BYTES = 1024
"""What a Kafka record batch adds around one record (batch header, varints, header names)."""


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why a message, or the record at ``index`` inside it, was rejected."""

    reason: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record ready to send to a dead-letter topic."""

    value: bytes
    key: bytes | None
    headers: Headers


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` on one line of at most ``limit`` characters: reasons may quote hostile input."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def message_origin(message: Message) -> str:
    """Where a message was read: ``topic/partition/offset``."""
    return f"{message.topic}/{message.partition}/{message.offset}"


def dead_letter(
    message: Message, errors: Sequence[RecordError], service: str, max_message_bytes: int
) -> DeadLetter:
    """The dead-letter record of ``message``, rejected for ``errors`` by ``service``, that fits in
    ``max_message_bytes`` (the broker's limit)."""
    if not errors:
        raise ValueError("a dead letter needs at least one reason")
    listed = [{"index": e.index, "reason": one_line(e.reason, 200)} for e in errors[:MAX_RECORD_ERRORS]]
    headers: list[tuple[str, bytes]] = [
        (REASON, one_line(errors[0].reason).encode()),
        (RECORDS, orjson.dumps(listed)),
        (COUNT, str(len(errors)).encode()),
        (ORIGIN, message_origin(message).encode()),
        (SERVICE, service.encode()),
    ]
    key = message.key if message.key is None or len(message.key) <= 4096 else message.key[:4096]
    value = message.value
    budget = max_message_bytes - RECORD_OVERHEAD_BYTES - len(key or b"") - _headers_size(headers)
    if len(value) > budget:
        headers.append((TRUNCATED, str(len(value)).encode()))
        value = value[: max(0, budget - 64)]
    return DeadLetter(value, key, tuple(headers))


def _headers_size(headers: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) + 8 for name, value in headers)
