"""The intent service: prompts and operator texts in, structured intents and demand series out.

It reads ``topics.operator_intents`` in group ``intent.group_id``, and ``topics.prompts`` when
``intent.user_demand`` is ``"keywords"`` (by default the edge LLM service classifies prompts with
its own model and publishes their intents and demand the same way, :mod:`nm_toolkit.llm.service`):

- a prompt (``{"request_id", "text", "location", "ts"?, ...}``) becomes a user service intent, or
  a clarification request, on ``topics.intent_results`` keyed by request id, and its demand (one
  request, its Mbit/s) goes to ``intent.demand_topic`` keyed by location, where a second collector
  windows it into per-location, per-service demand series (see :mod:`intent.demand`);
- an operator text (``{"request_id", "text", "tenant"?}`` or plain UTF-8 text) is parsed by the
  trained extractor, compiled to Nile, checked against every intent accepted before, and answered
  on ``topics.intent_results`` as accepted, conflicting (with the intents it conflicts with),
  a duplicate (of an accepted intent of the same tenant with the same Nile program: nothing new is
  put in force) or needing clarification. An accepted intent with a switch-level meaning (allow, block, a bandwidth
  cap) also goes to ``topics.intents`` as a :class:`~policies.intents.NetworkIntent`, keyed by its
  id: the table of intents in force that the decision stage (``nmt controller run``) reads;
- a retraction (``{"request_id", "retract": true}``) takes an accepted intent out of force: a null
  value (tombstone) under its id on ``topics.intents``, and ``retracted`` on the results topic.

Both are stream services on :mod:`nm_toolkit.bus.runtime`, run side by side by
:func:`intent_runners`.

A prompt can only ever express demand: nothing read from the prompts topic reaches the operator
path. Messages that are not UTF-8, not a JSON object where one is required, empty, overlong or
missing fields go whole to ``intent.dead_letter_topic`` with the reason in headers, and the
service carries on. The runtime commits offsets only after every output of a batch is flushed and
newly accepted intents are stored, so a crash replays messages rather than losing them; a replayed
operator intent is recognised by its request id and re-published unchanged, not flagged as
conflicting with itself. Delivery is at least once: the intents of a batch replayed after a crash
appear twice on ``topics.intent_results`` (same key, same content), and their demand counts twice in its
window. (The demand collector itself counts each demand record once, through its checkpoints.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.service import TelemetryCollector
from intent.demand import demand_batches, demand_collector, demand_records
from intent.evaluation import SpanExtractor
from intent.methods import load, parse_operator_intents
from intent.nile import compile_nile, conflict_reason, to_network_intent
from intent.schema import (
    IntentResult,
    NeedsClarification,
    OperatorIntent,
    ServiceClass,
    UserServiceIntent,
)
from intent.user import service_class, user_intent
from nm_toolkit.bus import Bus, Message, TopicPartition
from nm_toolkit.bus.checkpoints import CheckpointStore
from nm_toolkit.bus.deadletter import message_origin
from nm_toolkit.bus.runtime import (
    Emitter,
    Rejected,
    StreamRunner,
    StreamService,
    Topic,
    object_json,
)
from nm_toolkit.config import IntentServiceSettings, Settings, default_cache_dir
from nm_toolkit.errors import UserError, validation_reason
from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import (
    Identifier,
    PromptMessage,
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
    text: str = ""
    tenant: Identifier | None = None
    retract: bool = Field(default=False, description="take the accepted intent with this request_id out of force")


class IntentConflict(BaseModel):
    """An accepted intent that a new one cannot hold together with, and why."""

    request_id: str
    nile: str
    reason: str


class IntentRecord(BaseModel):
    """What the service answers on ``topics.intent_results`` for each prompt and operator text."""

    request_id: str
    source: Literal["user", "operator"]
    status: Literal["inferred", "accepted", "conflicting", "duplicate", "needs_clarification", "retracted"]
    intent: IntentResult
    tenant: str | None = None
    nile: str | None = Field(default=None, description="Nile program text of an operator intent")
    conflicts: list[IntentConflict] = Field(default_factory=list)
    duplicate_of: str | None = Field(default=None, description="the accepted intent a duplicate re-states")
    event_time: UtcDatetime
    origin: str = Field(description="topic/partition/offset of the message it came from")
    inferred_by: Literal["keywords", "edge_model"] | None = Field(
        default=None, description="of a user intent: what chose its service class (the keyword rules or the edge model's own output)"
    )


def user_prompt_intent(
    request_id: str, text: str, cell: str, kind: ServiceClass | None, inferred_by: Literal["keywords", "edge_model"], at: datetime,
    message: Message,
) -> tuple[IntentRecord, list[TelemetryRecord]]:  # fmt: skip
    """The answer on ``topics.intent_results`` to one user prompt of service class ``kind`` (None: it
    needs clarification), and its demand records at event time ``at``: what this service does with a
    prompt, and what the edge LLM service does with the class its model chose."""
    result = user_intent(request_id, text, cell, kind)
    records = demand_records(result, cell, at) if isinstance(result, UserServiceIntent) else []
    status = "inferred" if records else "needs_clarification"
    record = IntentRecord(
        request_id=request_id, source="user", status=status, intent=result, event_time=at, origin=message_origin(message), inferred_by=inferred_by
    )  # fmt: skip
    return record, records


@dataclass
class IntentServiceStats:
    """Counters that account for every message consumed: each is published or dead-lettered."""

    messages: int = 0
    user_intents: int = 0
    accepted: int = 0
    conflicting: int = 0
    duplicates: int = 0
    retracted: int = 0
    clarifications: int = 0
    replayed: int = 0
    dead_letters: int = 0
    demand_records: int = 0
    network_intents: int = 0


ACCEPTED_PARTITION = 0  # the checkpoint row of the accepted intents: one set per consumer group


def default_extractor_dir(settings: Settings) -> Path:
    """``intent.extractor_dir``, else where the built-in extractor is cached: once per machine (it
    is the same for every deployment, and training it takes minutes), not once per state directory."""
    return settings.intent.extractor_dir or default_cache_dir() / "intent-extractor"


def load_extractor(settings: Settings, note: Callable[[str], None] | None = None) -> SpanExtractor:
    """The configured operator-intent extractor, or a one-line error saying how to provide one.
    Without ``intent.extractor_dir`` it is the built-in one, trained on first use (``note`` says
    so; default: a log warning) and cached for the machine."""
    directory = default_extractor_dir(settings)
    if settings.intent.extractor_dir is None:
        from intent.builtin import ensure_builtin_extractor

        ensure_builtin_extractor(directory, *([note] if note else []))
    if not directory.is_dir():
        raise UserError(
            f"no operator-intent extractor at {directory}: train one with "
            f"`nmt intent train --input NILE_INTENTS.json -o {directory}` or set NMT_INTENT__EXTRACTOR_DIR"
        )
    return load(directory)


class IntentService(StreamService):
    """Consume prompts and operator intents in group ``config.group_id``; answer every one on
    ``results_topic``, publish accepted network intents on ``intents_topic`` and demand records on
    ``config.demand_topic``."""

    name = "intent"

    def __init__(
        self,
        config: IntentServiceSettings,
        *,
        prompts_topic: str,
        operator_topic: str,
        results_topic: str,
        intents_topic: str,
        extractor: SpanExtractor,
        checkpoints: CheckpointStore,
        bounds: EventTimeBounds = EventTimeBounds(),
    ) -> None:
        """``checkpoints`` keeps the accepted intents (one row per consumer group)."""
        self.config = config
        self.group_id = config.group_id
        self.dead_letter_topic = config.dead_letter_topic
        self.prompts = Topic(prompts_topic, PromptFields)
        self.operator_topic = operator_topic
        self.inputs = [*([self.prompts] if config.user_demand == "keywords" else []), Topic(operator_topic)]
        self.results_topic = results_topic
        self.intents_topic = intents_topic
        self.outputs = [results_topic, intents_topic, config.demand_topic]
        self.max_poll_records = config.max_poll_records
        self.extractor = extractor
        self.checkpoints = checkpoints
        self.bounds = bounds
        self.counters = IntentServiceStats()
        saved = checkpoints.load(self.group_id, intents_topic, ACCEPTED_PARTITION)
        accepted = [] if saved is None else saved[1]["accepted"]
        self.accepted = {r.request_id: r for r in map(IntentRecord.model_validate, accepted)}
        self._unsaved = False

    # -- the work ---------------------------------------------------------------------------
    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Answer every message (not flushed: the runtime flushes, then checkpoints, then commits)."""
        operator: list[tuple[Message, OperatorMessage]] = []
        demand: list[TelemetryRecord] = []
        self.counters.messages += len(messages)
        for message in messages:
            try:
                if message.topic == self.prompts.name:
                    demand += self._prompt(message, out)
                elif (request := self._operator_message(message)).retract:
                    self._retract(message, request, out)
                else:
                    operator.append((message, request))
            except Rejected as exc:
                self._dead_letter(message, exc, out)
        self._send_demand(demand, out)
        if not operator:
            return
        try:
            results = parse_operator_intents(self.extractor, [m.text for _, m in operator])
        except Exception as exc:  # keep serving: the batch's texts go to the DLQ with the reason
            log.exception("operator-intent extraction failed for a batch of %d", len(operator))
            for message, _ in operator:
                self._dead_letter(message, Rejected(f"extraction failed: {exc}"), out)
            return
        for (message, request), result in zip(operator, results, strict=True):
            try:
                record = self._operator_record(message, request, result)
            except Rejected as exc:
                self._dead_letter(message, exc, out)
                continue
            out.send(self.results_topic, record, record.request_id)
            if record.status == "accepted" and record.request_id not in self.accepted:
                self.accepted[record.request_id] = record
                self._unsaved = True
                self._publish_network_intent(record, out)

    def _publish_network_intent(self, record: IntentRecord, out: Emitter) -> None:
        """An accepted intent the switches can carry out goes to the intents table."""
        if not isinstance(record.intent, OperatorIntent):
            return
        network = to_network_intent(record.intent, record.request_id, record.tenant or self.config.default_tenant)
        if network is not None:
            out.send(self.intents_topic, network, network.id)
            self.counters.network_intents += 1

    def _retract(self, message: Message, request: OperatorMessage, out: Emitter) -> None:
        """Take an accepted intent out of force: a tombstone under its id in the intents table."""
        record = self.accepted.pop(request.request_id, None)
        if record is None:
            raise Rejected(f"no accepted intent has request_id {request.request_id!r}: retract one answered 'accepted' on the results topic")
        self._unsaved = True
        self.counters.retracted += 1
        out.send(self.intents_topic, None, record.request_id)
        retracted = record.model_copy(update={"status": "retracted", "event_time": broker_time(message), "origin": message_origin(message)})
        out.send(self.results_topic, retracted, record.request_id)

    def checkpoint(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store every accepted intent, oldest first, once newly accepted ones are flushed
        (operator intents are few: the whole set is one row)."""
        if not self._unsaved:
            return
        state = {"accepted": [r.model_dump(mode="json") for r in self.accepted.values()]}
        self.checkpoints.save(self.group_id, [(self.intents_topic, ACCEPTED_PARTITION, len(self.accepted), state)])
        self._unsaved = False

    def _checked_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise Rejected("empty text: send the words of the request in 'text'")
        if len(text) > self.config.max_text_chars:
            raise Rejected(
                f"text of {len(text)} characters exceeds the {self.config.max_text_chars}-character limit (intent.max_text_chars)"
            )
        return text

    def _prompt(self, message: Message, out: Emitter) -> list[TelemetryRecord]:
        """Answer the prompt with its intent; return its demand records (none without an intent)."""
        prompt = self.prompts.decode(message)
        text = self._checked_text(prompt.text)
        cell = prompt.cell
        if cell is None:
            raise Rejected("location has no cell: send 'location' as a cell id or {'cell': ...}")
        at = prompt.ts or broker_time(message)
        if (reason := self.bounds.reason(at)) is not None:
            raise Rejected(reason)
        record, records = user_prompt_intent(prompt.request_id, text, cell, service_class(text), "keywords", at, message)
        out.send(self.results_topic, record, record.request_id)
        self.counters.user_intents += bool(records)
        return records

    def _send_demand(self, records: list[TelemetryRecord], out: Emitter) -> None:
        """One message per location (:func:`~intent.demand.demand_batches`)."""
        for location, batch in demand_batches(records).items():
            out.send(self.config.demand_topic, batch, location)
        self.counters.demand_records += len(records)

    def _operator_message(self, message: Message) -> OperatorMessage:
        data = object_json(message.value, plain_text=True)
        if data is None:  # plain text: its position is its request id, stable under redelivery
            data = {"request_id": message_origin(message), "text": message.value.decode("utf-8")}
        try:
            request = OperatorMessage.model_validate(data)
        except ValidationError as exc:
            raise Rejected(f"invalid operator intent message: {validation_reason(exc, limit=1)}") from exc
        if request.retract:
            return request
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
            self.counters.replayed += 1
            return previous
        common = {"request_id": request.request_id, "source": "operator", "tenant": request.tenant,
                  "event_time": broker_time(message), "origin": message_origin(message)}  # fmt: skip
        if isinstance(result, NeedsClarification):
            self.counters.clarifications += 1
            return IntentRecord(status="needs_clarification", intent=result.model_copy(update={"request_id": request.request_id}), **common)
        nile = compile_nile(result)
        same = next((rid for rid, prior in self.accepted.items() if prior.nile == nile and prior.tenant == request.tenant), None)
        if same is not None:
            self.counters.duplicates += 1
            return IntentRecord(status="duplicate", intent=result, nile=nile, duplicate_of=same, **common)
        conflicts = [
            IntentConflict(request_id=rid, nile=prior.nile or "", reason=reason)
            for rid, prior in self.accepted.items()
            if isinstance(prior.intent, OperatorIntent) and (reason := conflict_reason(prior.intent, result))
        ]
        if conflicts:
            self.counters.conflicting += 1
        else:
            self.counters.accepted += 1
        status = "conflicting" if conflicts else "accepted"
        return IntentRecord(status=status, intent=result, nile=nile, conflicts=conflicts, **common)

    def _dead_letter(self, message: Message, exc: Rejected, out: Emitter) -> None:
        self.counters.dead_letters += 1
        out.dead_letter(message, exc.errors)

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)

    def close(self) -> None:
        self.checkpoints.close()


def broker_time(message: Message) -> datetime:
    """When the broker (or producer) stamped the message; now, for a stamp no date can hold."""
    try:
        return datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.now(UTC)


@dataclass
class IntentRunners:
    """The intent service and its demand collector, each on its runner, run side by side."""

    intents: StreamRunner
    demand: StreamRunner

    @property
    def service(self) -> IntentService:
        return self.intents.service  # type: ignore[return-value]

    @property
    def collector(self) -> TelemetryCollector:
        return self.demand.service  # type: ignore[return-value]

    @property
    def runners(self) -> list[StreamRunner]:
        return [self.intents, self.demand]

    def stats_dict(self) -> dict[str, float]:
        """The service's counters and those of its demand collector (``demand_*``)."""
        demand = self.collector.stats()
        return self.intents.stats_dict() | {
            "demand_windows": demand["windows_emitted"],
            "demand_late": demand["late_records"],
            "demand_dead_letters": demand["dead_letter_records"],
        }


def intent_runners(
    settings: Settings, bus: Bus, extractor: SpanExtractor | None = None, checkpoints: CheckpointStore | None = None
) -> IntentRunners:
    """The intent service the settings describe (extractor from ``intent.extractor_dir`` and the
    accepted intents' store under ``state_dir`` unless given) and its demand collector, on ``bus``."""
    topics = settings.topics
    bounds = EventTimeBounds.from_settings(settings.collector.min_timestamp, settings.collector.max_future_seconds)
    service = IntentService(
        settings.intent,
        prompts_topic=topics.prompts,
        operator_topic=topics.operator_intents,
        results_topic=topics.intent_results,
        intents_topic=topics.intents,
        extractor=extractor if extractor is not None else load_extractor(settings),
        checkpoints=checkpoints or CheckpointStore.for_service(settings.state_dir, bus, "intents"),
        bounds=bounds,
    )
    return IntentRunners(StreamRunner(bus, service), StreamRunner(bus, demand_collector(settings, bus)))
