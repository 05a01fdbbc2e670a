"""The intent service: prompts and operator texts in, structured intents and demand series out.

It reads ``topics.prompts`` and ``topics.operator_intents`` in group ``intent.group_id``:

- a prompt (``{"request_id", "text", "location", "ts"?, ...}``) becomes a user service intent, or
  a clarification request, on ``topics.intents`` keyed by request id, and its demand (one request,
  its Mbit/s) goes to ``intent.demand_topic`` keyed by location, where a collector windows it into
  per-location, per-service demand series (see :mod:`intent.demand`);
- an operator text (``{"request_id", "text", "tenant"?}`` or plain UTF-8 text) is parsed by the
  trained extractor, compiled to Nile, checked against every intent accepted before, and published
  as accepted, conflicting (with the intents it conflicts with) or needing clarification.

A prompt can only ever express demand: nothing read from the prompts topic reaches the operator
path. Messages that are not UTF-8, not a JSON object where one is required, empty, overlong or
missing fields go whole to ``intent.dead_letter_topic`` with the reason in headers, and the
service carries on. Offsets are committed only after every output of a batch is flushed and newly
accepted intents are stored, so a crash replays messages rather than losing them; a replayed
operator intent is recognised by its request id and re-published unchanged, not flagged as
conflicting with itself. Delivery is at least once: the intents of a batch replayed after a crash
appear twice on ``topics.intents`` (same key, same content), and their demand counts twice in its
window. (The demand collector itself counts each demand record once, through its checkpoints.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.checkpoints import CheckpointStore
from collectors.decode import RecordError
from collectors.service import dead_letter_headers, message_origin
from intent.demand import demand_collector, demand_records
from intent.evaluation import SpanExtractor
from intent.methods import load, parse_operator_intents
from intent.nile import compile_nile, conflict_reason
from intent.schema import (
    IntentResult,
    NeedsClarification,
    OperatorIntent,
    UserServiceIntent,
)
from intent.structure import validation_reason
from intent.user import infer_user_intent
from nm_toolkit.bus import Bus, Message, next_offsets
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.schemas import (
    Identifier,
    PromptMessage,
    TelemetryBatch,
    TelemetryRecord,
    UtcDatetime,
)

log = logging.getLogger(__name__)

class PromptFields(PromptMessage):
    """A prompt message as this service reads it: fields it does not know are the prompt
    service's business and are ignored here rather than rejected."""

    model_config = ConfigDict(extra="ignore")


class OperatorMessage(BaseModel):
    """An operator's intent in natural language, as a JSON message."""

    model_config = ConfigDict(extra="forbid")

    request_id: Identifier
    text: str
    tenant: Identifier | None = None


class IntentConflict(BaseModel):
    """An accepted intent that a new one cannot hold together with, and why."""

    request_id: str
    nile: str
    reason: str


class IntentRecord(BaseModel):
    """What the service publishes on ``topics.intents`` for each prompt and operator text."""

    request_id: str
    source: Literal["user", "operator"]
    status: Literal["inferred", "accepted", "conflicting", "needs_clarification"]
    intent: IntentResult
    tenant: str | None = None
    nile: str | None = Field(default=None, description="Nile program text of an operator intent")
    conflicts: list[IntentConflict] = Field(default_factory=list)
    event_time: UtcDatetime
    origin: str = Field(description="topic/partition/offset of the message it came from")


@dataclass
class IntentServiceStats:
    """Counters that account for every message consumed: each is published or dead-lettered."""

    messages: int = 0
    user_intents: int = 0
    accepted: int = 0
    conflicting: int = 0
    clarifications: int = 0
    replayed: int = 0
    dead_letters: int = 0
    demand_records: int = 0


ACCEPTED_PARTITION = 0  # the checkpoint row of the accepted intents: one set per consumer group


class Rejected(Exception):
    """A message the service dead-letters; the message says why."""


def default_extractor_dir(settings: Settings) -> Path:
    return settings.intent.extractor_dir or settings.state_dir / "intent-extractor"


def load_extractor(settings: Settings) -> SpanExtractor:
    """The configured operator-intent extractor, or a one-line error saying how to provide one."""
    directory = default_extractor_dir(settings)
    if not directory.is_dir():
        raise UserError(
            f"no operator-intent extractor at {directory}: train one with "
            f"`nmt intent train --input NILE_INTENTS.json -o {directory}` or set NMT_INTENT__EXTRACTOR_DIR"
        )
    return load(directory)


def json_object(raw: bytes, plain_text_allowed: bool) -> dict[str, Any] | None:
    """The JSON object in ``raw``; None for plain text where that is allowed. Raises Rejected."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if plain_text_allowed and not text.lstrip().startswith(("{", "[")):
            return None
        raise Rejected(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got a JSON {type(data).__name__}")
    return data


class IntentService:
    """Consume prompts and operator intents in group ``intent.group_id``; publish intents and demand."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        extractor: SpanExtractor | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        """``checkpoints`` keeps the accepted intents; default: a SQLite file per cluster under
        ``state_dir`` (in memory for a bus that is not durable)."""
        self.settings = settings
        self._cfg = settings.intent
        self._topics = settings.topics
        self.extractor = extractor if extractor is not None else load_extractor(settings)
        self.stats = IntentServiceStats()
        bus.create_topics(
            [self._topics.prompts, self._topics.operator_intents, self._topics.intents, self._cfg.dead_letter_topic, self._cfg.demand_topic]
        )
        self.checkpoints = checkpoints or CheckpointStore(
            settings.state_dir / f"intents-{bus.cluster_id()}.sqlite" if bus.durable else None
        )
        saved = self.checkpoints.load(self._cfg.group_id, self._topics.intents, ACCEPTED_PARTITION)
        accepted = [] if saved is None else saved[1]["accepted"]
        self.accepted = {r.request_id: r for r in map(IntentRecord.model_validate, accepted)}
        self.demand = demand_collector(bus, settings)
        self.producer = bus.producer()
        self.consumer = bus.consumer(
            [self._topics.prompts, self._topics.operator_intents], self._cfg.group_id, max_poll_records=self._cfg.max_poll_records
        )

    # -- the work ---------------------------------------------------------------------------
    def step(self, timeout_s: float = 0.5, limit: int | None = None) -> int:
        """Poll (at most ``limit`` messages), publish what they mean, flush, store, commit; then
        window the demand. Return how many messages of either stage were handled."""
        messages = self.consumer.poll(min(self._cfg.max_poll_records, limit or self._cfg.max_poll_records), timeout_s)
        if messages:
            newly_accepted = self.handle(messages)
            self.producer.flush()
            if newly_accepted:
                self._save_accepted()
            self.consumer.commit(next_offsets(messages))
            self.stats.messages += len(messages)
        return len(messages) + self.demand.step(timeout_s=0.0 if messages else min(timeout_s, 0.1))

    def handle(self, messages: Sequence[Message]) -> list[IntentRecord]:
        """Publish the outputs of ``messages`` (not flushed); return the newly accepted intents."""
        operator: list[tuple[Message, OperatorMessage]] = []
        demand: list[TelemetryRecord] = []
        for message in messages:
            try:
                if message.topic == self._topics.prompts:
                    demand += self._prompt(message)
                else:
                    operator.append((message, self._operator_message(message)))
            except Rejected as exc:
                self._dead_letter(message, str(exc))
        self._send_demand(demand)
        if not operator:
            return []
        try:
            results = parse_operator_intents(self.extractor, [m.text for _, m in operator])
        except Exception as exc:  # keep serving: the batch's texts go to the DLQ with the reason
            log.exception("operator-intent extraction failed for a batch of %d", len(operator))
            for message, _ in operator:
                self._dead_letter(message, f"extraction failed: {exc}")
            return []
        newly_accepted = []
        for (message, request), result in zip(operator, results, strict=True):
            try:
                record = self._operator_record(message, request, result)
            except Rejected as exc:
                self._dead_letter(message, str(exc))
                continue
            self._publish(record)
            if record.status == "accepted" and record.request_id not in self.accepted:
                self.accepted[record.request_id] = record
                newly_accepted.append(record)
        return newly_accepted

    def _save_accepted(self) -> None:
        """Store every accepted intent, oldest first (operator intents are few: the whole set is one row)."""
        state = {"accepted": [r.model_dump(mode="json") for r in self.accepted.values()]}
        self.checkpoints.save(self._cfg.group_id, [(self._topics.intents, ACCEPTED_PARTITION, len(self.accepted), state)])

    def _checked_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise Rejected("empty text: send the words of the request in 'text'")
        if len(text) > self._cfg.max_text_chars:
            raise Rejected(
                f"text of {len(text)} characters exceeds the {self._cfg.max_text_chars}-character limit (intent.max_text_chars)"
            )
        return text

    def _prompt(self, message: Message) -> list[TelemetryRecord]:
        """Publish the prompt's intent; return its demand records (none without an intent)."""
        data = json_object(message.value, plain_text_allowed=False)
        try:
            prompt = PromptFields.model_validate(data)
        except ValidationError as exc:
            raise Rejected(f"invalid prompt message: {validation_reason(exc)}") from exc
        text = self._checked_text(prompt.text)
        cell = prompt.cell
        if cell is None:
            raise Rejected("location has no cell: send 'location' as a cell id or {'cell': ...}")
        at = prompt.ts or _broker_time(message)
        result = infer_user_intent(prompt.request_id, text, cell)
        records = demand_records(result, cell, at) if isinstance(result, UserServiceIntent) else []
        if errors := self.demand.decoder.decode(TelemetryBatch(records=records).model_dump_json().encode()).errors:
            raise Rejected(f"its demand cannot be windowed: {errors[0].reason}")  # the prompt's own bytes go to the DLQ
        status = "inferred" if records else "needs_clarification"
        self._publish(
            IntentRecord(request_id=prompt.request_id, source="user", status=status, intent=result, event_time=at, origin=_origin(message))
        )
        self.stats.user_intents += bool(records)
        return records

    def _send_demand(self, records: list[TelemetryRecord]) -> None:
        """One message per location, its records in event-time order: a batch read from several
        prompt partitions then reaches the windows in order, not partition after partition."""
        by_location: dict[str, list[TelemetryRecord]] = {}
        for record in sorted(records, key=lambda r: r.ts):
            by_location.setdefault(record.source, []).append(record)
        for location, batch in by_location.items():
            self.producer.send(self._cfg.demand_topic, TelemetryBatch(records=batch).model_dump_json().encode(), location.encode())
        self.stats.demand_records += len(records)

    def _operator_message(self, message: Message) -> OperatorMessage:
        data = json_object(message.value, plain_text_allowed=True)
        if data is None:  # plain text: its position is its request id, stable under redelivery
            data = {"request_id": _origin(message), "text": message.value.decode("utf-8")}
        try:
            request = OperatorMessage.model_validate(data)
        except ValidationError as exc:
            raise Rejected(f"invalid operator intent message: {validation_reason(exc)}") from exc
        return request.model_copy(update={"text": self._checked_text(request.text)})

    def _operator_record(
        self, message: Message, request: OperatorMessage, result: OperatorIntent | NeedsClarification
    ) -> IntentRecord:
        previous = self.accepted.get(request.request_id)
        if previous is not None:
            if previous.intent.text != request.text:
                raise Rejected(
                    f"request_id {request.request_id!r} already names an accepted intent with other words: send a new request_id"
                )
            self.stats.replayed += 1
            return previous
        common = {"request_id": request.request_id, "source": "operator", "tenant": request.tenant,
                  "event_time": _broker_time(message), "origin": _origin(message)}  # fmt: skip
        if isinstance(result, NeedsClarification):
            self.stats.clarifications += 1
            return IntentRecord(status="needs_clarification", intent=result.model_copy(update={"request_id": request.request_id}), **common)
        conflicts = [
            IntentConflict(request_id=rid, nile=prior.nile or "", reason=reason)
            for rid, prior in self.accepted.items()
            if isinstance(prior.intent, OperatorIntent) and (reason := conflict_reason(prior.intent, result))
        ]
        if conflicts:
            self.stats.conflicting += 1
        else:
            self.stats.accepted += 1
        status = "conflicting" if conflicts else "accepted"
        return IntentRecord(status=status, intent=result, nile=compile_nile(result), conflicts=conflicts, **common)

    def _publish(self, record: IntentRecord) -> None:
        self.producer.send(self._topics.intents, record.model_dump_json().encode(), record.request_id.encode())

    def _dead_letter(self, message: Message, reason: str) -> None:
        self.stats.dead_letters += 1
        self.producer.send(self._cfg.dead_letter_topic, message.value, message.key, dead_letter_headers(message, [RecordError(reason)]))

    # -- lifecycle --------------------------------------------------------------------------
    def run(
        self, stop: threading.Event, idle_exit_s: float | None = None, max_records: int | None = None
    ) -> IntentServiceStats:
        """Work until ``stop`` is set, ``max_records`` messages were handled, or nothing arrived for
        ``idle_exit_s`` seconds while this member held partitions; then checkpoint and leave."""
        last_work = time.monotonic()
        try:
            while not stop.is_set() and (max_records is None or self.stats.messages < max_records):
                handled = self.step(limit=None if max_records is None else max_records - self.stats.messages)
                joining = not (self.consumer.assignment() and self.demand.consumer.assignment())
                if handled or joining:  # waiting to join a group is not idleness
                    last_work = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - last_work >= idle_exit_s:
                    break
        finally:
            self.close()
        return self.stats

    def stats_dict(self) -> dict[str, int]:
        """The service's counters and those of its demand collector (``demand_*``)."""
        demand = self.demand.stats_dict()
        return asdict(self.stats) | {
            "demand_windows": demand["windows_emitted"],
            "demand_late": demand["late_records"],
            "demand_dead_letters": demand["dead_letter_records"],
        }

    def close(self) -> None:
        """Leave the group (offsets were committed after each batch) and checkpoint the demand windows."""
        self.consumer.close()
        self.producer.flush()
        self.producer.close()
        self.demand.close()
        self.checkpoints.close()


def _origin(message: Message) -> str:
    return message_origin(message).decode()


def _broker_time(message: Message) -> datetime:
    return datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
