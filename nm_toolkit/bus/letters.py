"""Reading dead letters back, and replaying them once their cause is fixed.

Every stream service sends what it cannot use to its dead-letter topic (:mod:`nm_toolkit.bus.deadletter`)
with the original bytes and key, the reason and the origin in headers. A person reads them with
``nmt dead-letters tail`` and, once the cause is fixed (a schema relaxed, a model retrained, a bug
in a service), sends chosen ones back to the topic they came from with ``nmt dead-letters replay``.

Replay is at most once per letter: before a letter is sent back, its own position
(``topic/partition/offset`` on the dead-letter topic) is written to the replay ledger
(``topics.dead_letter_replays``, a compacted table) and flushed; a letter the ledger holds is never
sent again, whoever asks. A crash between the two writes loses that one replay rather than
doubling it: the service that rejected it already counted it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from nm_toolkit.bus.base import Bus, Message
from nm_toolkit.bus.deadletter import (
    COUNT,
    ORIGIN,
    REASON,
    SERVICE,
    TRUNCATED,
    message_origin,
)


@dataclass(frozen=True)
class Letter:
    """One dead letter as read back: where it lies, who rejected it, why, and where it came from."""

    position: str
    service: str
    reason: str
    origin: str
    count: int
    truncated_from: int | None
    at: datetime
    key: bytes | None
    value: bytes

    @property
    def origin_topic(self) -> str:
        return self.origin.rsplit("/", 2)[0]

    def summary(self, preview_bytes: int = 60) -> dict[str, object]:
        """A row for people and scripts: the value is previewed, not dumped."""
        preview = self.value[:preview_bytes].decode("utf-8", "backslashreplace")
        return {
            "position": self.position, "service": self.service, "at": self.at.isoformat(timespec="seconds"),
            "reason": self.reason, "origin": self.origin, "bad_records": self.count,
            "bytes": self.truncated_from if self.truncated_from is not None else len(self.value),
            "truncated": self.truncated_from is not None,
            "value": preview + ("…" if len(self.value) > preview_bytes else ""),
        }  # fmt: skip


def letter_of(message: Message, service: str) -> Letter:
    """``message`` of a dead-letter topic as a :class:`Letter` (``service``: whose topic it is,
    unless its own header says otherwise)."""
    headers = {name: value for name, value in message.headers}

    def text(name: str, default: str = "") -> str:
        return headers[name].decode("utf-8", "replace") if name in headers else default

    truncated = text(TRUNCATED)
    return Letter(
        position=message_origin(message),
        service=text(SERVICE, service),
        reason=text(REASON, "(no reason recorded)"),
        origin=text(ORIGIN),
        count=int(text(COUNT, "1") or 1),
        truncated_from=int(truncated) if truncated.isdigit() else None,
        at=datetime.fromtimestamp(message.timestamp_ms / 1000, UTC),
        key=message.key,
        value=message.value,
    )


def _read_whole(bus: Bus, topics: Iterable[str], idle_s: float) -> list[Message]:
    """Every message of ``topics`` from the beginning, with a throw-away group (nobody's offsets
    move), until a poll of ``idle_s`` brings nothing."""
    names = list(topics)
    bus.create_topics(names)
    consumer = bus.consumer(names, f"nmt-dead-letters-{uuid.uuid4().hex[:8]}")
    out: list[Message] = []
    try:
        while batch := consumer.poll(5000, idle_s):
            out.extend(batch)
    finally:
        consumer.close()
    return out


def read_letters(bus: Bus, topics: Mapping[str, str], idle_s: float = 3.0) -> list[Letter]:
    """The dead letters on ``topics`` (service -> dead-letter topic), oldest first."""
    service_of = {topic: service for service, topic in topics.items()}
    letters = [letter_of(m, service_of[m.topic]) for m in _read_whole(bus, service_of, idle_s)]
    return sorted(letters, key=lambda letter: (letter.at, letter.position))


def replayed_positions(bus: Bus, ledger_topic: str, idle_s: float = 3.0) -> set[str]:
    """The positions of the letters already sent back (the replay ledger, read whole)."""
    return {m.key.decode() for m in _read_whole(bus, [ledger_topic], idle_s) if m.key is not None and m.value}


@dataclass(frozen=True)
class ReplayOutcome:
    position: str
    status: str  # "replayed" | "already_replayed" | "truncated" | "no_origin"
    to: str = ""


def replay(bus: Bus, letters: Iterable[Letter], ledger_topic: str, done: set[str]) -> list[ReplayOutcome]:
    """Send each letter back to its original topic, at most once (``done``: positions the ledger
    holds; updated). A letter cut to fit the broker, or without an origin, cannot be replayed."""
    producer = bus.producer()
    outcomes = []
    try:
        for letter in letters:
            if letter.position in done:
                outcomes.append(ReplayOutcome(letter.position, "already_replayed"))
                continue
            if letter.truncated_from is not None:
                outcomes.append(ReplayOutcome(letter.position, "truncated"))
                continue
            if letter.origin.count("/") < 2:
                outcomes.append(ReplayOutcome(letter.position, "no_origin"))
                continue
            entry = {"replayed_at": datetime.now(UTC).isoformat(), "to": letter.origin_topic, "reason": letter.reason}
            producer.send(ledger_topic, orjson.dumps(entry), letter.position.encode())
            producer.flush()  # the ledger first: a crash now loses this replay, never doubles it
            producer.send(letter.origin_topic, letter.value, letter.key)
            done.add(letter.position)
            outcomes.append(ReplayOutcome(letter.position, "replayed", letter.origin_topic))
        producer.flush()
    finally:
        producer.close()
    return outcomes
