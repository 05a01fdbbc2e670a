"""The prompt service: prompts topic in, completions topic out, micro-batched generation between.

A :class:`~nm_toolkit.bus.runtime.StreamService`: the runtime polls up to ``llm.max_batch``
prompts per step, and :meth:`PromptService.handle` completes the valid ones in one generation
batch. Every message gets exactly one record on the completions topic, in the order read, keyed by
its request id (the requester waits for it): a completion, or ``status: "error"`` with the reason.
A message that cannot be answered (undecodable, invalid, empty, too long, from an unknown cell, past
its timeout, or in a batch whose generation failed) also goes whole to ``llm.dead_letter_topic``
(original bytes, reason in ``nmt.error.*`` headers), so it can be inspected or replayed.

Offsets are committed by the runtime only after those records are flushed, so a crash replays
requests rather than losing them (a replayed request may be answered twice). A poll returns
whatever has arrived, up to the batch size, so a burst fills a batch without waiting for one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from nm_toolkit.bus.base import Message
from nm_toolkit.bus.deadletter import one_line
from nm_toolkit.bus.runtime import FATAL_ERRORS, Emitter, Rejected, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.llm.netgpt import COMPLETION_TASK, EdgeCompleter, EdgeRequest, PreparedRequest
from nm_toolkit.schemas import Identifier, PromptMessage

log = logging.getLogger(__name__)

_REQUEST_ID: TypeAdapter[str] = TypeAdapter(Identifier)


class CompletionRecord(BaseModel):
    """The reply to one prompt message: a completion, or an error with its reason (the message
    itself is on the dead-letter topic)."""

    request_id: str | None
    status: Literal["ok", "error"]
    completion: str | None = None
    adapter: str | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    finished: bool | None = None
    latency_ms: float = Field(description="from the prompt's broker timestamp to this record")
    reason: str | None = None
    source_partition: int
    source_offset: int


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request may ask and how long it may wait."""

    max_batch: int = 16
    max_prompt_chars: int = 1000
    request_timeout_s: float = 30.0


@dataclass
class PromptServiceStats:
    """Every message handled is answered: ``requests == completions + errors``."""

    requests: int = 0
    completions: int = 0
    errors: int = 0
    generation_batches: int = 0
    generation_failures: int = 0


class _Unanswerable(Rejected):
    """A prompt the service answers with an error record (and dead-letters), knowing its request id."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


@dataclass
class _Valid:
    index: int
    request: PromptMessage
    prepared: PreparedRequest
    tokens: int


class PromptService(StreamService):
    """Completes prompts at the edge in micro-batches; one completion record per prompt message."""

    name = "llm"

    def __init__(
        self,
        completer: EdgeCompleter,
        *,
        prompts_topic: str,
        completions_topic: str,
        group_id: str,
        dead_letter_topic: str,
        limits: ServiceLimits = ServiceLimits(),
    ) -> None:
        self.completer = completer
        self.prompts = Topic(prompts_topic, PromptMessage)
        self.inputs = [self.prompts]
        self.completions_topic = completions_topic
        self.outputs = [completions_topic]
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.limits = limits
        self.max_poll_records = limits.max_batch
        self.counters = PromptServiceStats()

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Answer ``messages`` in order; the valid ones are generated in one batch. Never raises
        for a message (a retry one by one would answer the others twice); only faults of the bus
        or the machine (:data:`FATAL_ERRORS`) propagate."""
        records: list[CompletionRecord | None] = [None] * len(messages)
        valid: list[_Valid] = []
        for index, message in enumerate(messages):
            try:
                request = self._decode(message)
                prepared, tokens = self._prepare(message, request)
                valid.append(_Valid(index, request, prepared, tokens))
            except _Unanswerable as exc:
                records[index] = self._reject(message, exc.request_id, exc.errors[0].reason, out)
            except FATAL_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - a poison message must not stop the service
                log.exception("%s could not prepare %s/%d/%d", self.name, *message.topic_partition, message.offset)
                reason = f"{self.name} failed on it: {type(exc).__name__}: {exc}"
                records[index] = self._reject(message, _request_id(message.value), reason, out)
        if valid:
            self._generate(messages, valid, records, out)
        for message, record in zip(messages, records, strict=True):
            assert record is not None
            key = record.request_id if record.request_id is not None else message.key
            out.send(self.completions_topic, record.model_dump_json(exclude_none=True).encode(), key)
        self.counters.requests += len(messages)

    def _generate(self, messages: Sequence[Message], valid: list[_Valid], records: list[CompletionRecord | None], out: Emitter) -> None:
        self.counters.generation_batches += 1
        try:
            generations = self.completer.complete([v.prepared for v in valid])
            if len(generations) != len(valid):
                raise RuntimeError(f"{len(generations)} generations for {len(valid)} prompts")
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - keep serving: the batch's requests get the reason instead
            log.exception("generation failed for a batch of %d", len(valid))
            self.counters.generation_failures += 1
            reason = f"generation failed: {type(exc).__name__}: {exc}"
            for v in valid:
                records[v.index] = self._reject(messages[v.index], v.request.request_id, reason, out)
            return
        for v, generation in zip(valid, generations, strict=True):
            message = messages[v.index]
            records[v.index] = CompletionRecord(
                request_id=v.request.request_id, status="ok", completion=generation.text, adapter=generation.adapter,
                prompt_tokens=v.tokens, new_tokens=generation.new_tokens, finished=generation.finished,
                latency_ms=_age_ms(message), source_partition=message.partition, source_offset=message.offset,
            )  # fmt: skip
            self.counters.completions += 1

    def _decode(self, message: Message) -> PromptMessage:
        """The prompt message, or :class:`_Unanswerable` with the runtime's reason and whatever
        request id the message names."""
        try:
            return self.prompts.decode(message)
        except Rejected as exc:
            raise _Unanswerable(exc.errors[0].reason, _request_id(message.value)) from exc
        except OverflowError as exc:  # a time with no UTC equivalent (year 9999 west of Greenwich)
            reason = f"not a {PromptMessage.__name__}: {one_line(str(exc), 200)}"
            raise _Unanswerable(reason, _request_id(message.value)) from exc

    def _prepare(self, message: Message, request: PromptMessage) -> tuple[PreparedRequest, int]:
        rid = request.request_id
        if not request.text.strip():
            raise _Unanswerable("empty prompt: send the user's words in 'text'", rid)
        if len(request.text) > self.limits.max_prompt_chars:
            raise _Unanswerable(f"prompt too long: {len(request.text)} characters > {self.limits.max_prompt_chars}", rid)
        if request.cell is None:
            raise _Unanswerable("location has no cell: send 'location' as a cell id or {'cell': ...}", rid)
        if (age := _age_ms(message)) > 1000 * self.limits.request_timeout_s:
            raise _Unanswerable(f"timed out: waited {age / 1000:.1f} s > {self.limits.request_timeout_s} s in the queue", rid)
        try:
            prepared = self.completer.prepare(
                EdgeRequest(request.text, request.cell, request.user, request.ts, request.task or COMPLETION_TASK, request.adapter)
            )
        except UserError as exc:
            raise _Unanswerable(str(exc), rid) from exc
        tokens = self.completer.lm.token_counts([prepared.model_input])[0]
        if tokens > self.completer.limits.max_input_tokens:
            raise _Unanswerable(f"prompt too long: {tokens} tokens with context > {self.completer.limits.max_input_tokens}", rid)
        return prepared, tokens

    def _reject(self, message: Message, request_id: str | None, reason: str, out: Emitter) -> CompletionRecord:
        """Dead-letter ``message`` and return its error reply."""
        out.dead_letter(message, reason)
        self.counters.errors += 1
        return CompletionRecord(
            request_id=request_id, status="error", reason=one_line(reason), latency_ms=_age_ms(message),
            source_partition=message.partition, source_offset=message.offset,
        )  # fmt: skip

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)


def prompt_service(settings: Settings, completer: EdgeCompleter) -> PromptService:
    """The prompt service the settings describe, completing with ``completer``
    (:func:`nm_toolkit.llm.deployment.edge_completer` builds the configured one)."""
    cfg = settings.llm
    return PromptService(
        completer,
        prompts_topic=settings.topics.prompts,
        completions_topic=settings.topics.completions,
        group_id=cfg.group_id,
        dead_letter_topic=cfg.dead_letter_topic,
        limits=ServiceLimits(cfg.max_batch, cfg.max_prompt_chars, cfg.request_timeout_s),
    )


def _request_id(raw: bytes) -> str | None:
    """The request id a message that failed validation names, if it names a valid one: its error
    reply is then keyed by it, so the requester learns why."""
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return _REQUEST_ID.validate_python(data.get("request_id"))
    except ValidationError:
        return None


def _age_ms(message: Message) -> float:
    return max(0.0, time.time() * 1000 - message.timestamp_ms)
