"""The prompt service: prompts topic in, completions topic out, micro-batched generation between.

Every message gets exactly one record on the completions topic, keyed by its request id: a
completion, or an error with the reason and the original bytes (empty, overlong, undecodable or
unanswerable prompts). Offsets are committed only after those records are flushed, so a crash
replays requests rather than losing them.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from nm_toolkit.bus.base import Bus, Consumer, Message, next_offsets
from nm_toolkit.errors import UserError
from nm_toolkit.llm.netgpt import COMPLETION_TASK, EdgeCompleter, EdgeRequest, PreparedRequest
from nm_toolkit.schemas import PromptMessage

log = logging.getLogger(__name__)


class CompletionRecord(BaseModel):
    """The reply to one prompt message: a completion, or an error with its reason and the original bytes."""

    request_id: str | None
    status: Literal["ok", "error"]
    completion: str | None = None
    adapter: str | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    finished: bool | None = None
    latency_ms: float = Field(description="from the prompt's broker timestamp to this record")
    reason: str | None = None
    original_b64: str | None = None
    source_partition: int
    source_offset: int


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request may ask and how long it may wait."""

    max_batch: int = 16
    batch_window_s: float = 0.02
    max_prompt_chars: int = 1000
    request_timeout_s: float = 30.0


@dataclass
class ServiceStats:
    requests: int = 0
    completions: int = 0
    errors: int = 0
    batches: int = 0


class RequestRejected(Exception):
    """A prompt message the service answers with an error record instead of a completion."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


class PromptService:
    """Consumes prompts, completes them at the edge in micro-batches, produces completion records."""

    def __init__(
        self,
        bus: Bus,
        completer: EdgeCompleter,
        prompts_topic: str,
        completions_topic: str,
        group_id: str = "nmt-prompt-service",
        limits: ServiceLimits = ServiceLimits(),
    ) -> None:
        self.bus = bus
        self.completer = completer
        self.prompts_topic = prompts_topic
        self.completions_topic = completions_topic
        self.group_id = group_id
        self.limits = limits
        self.stats = ServiceStats()

    def run(self, stop: threading.Event | None = None, max_requests: int | None = None, idle_exit_s: float | None = None) -> ServiceStats:
        """Serve until ``stop`` is set, ``max_requests`` were answered, or nothing came for ``idle_exit_s``."""
        stop = stop or threading.Event()
        self.bus.create_topics([self.prompts_topic, self.completions_topic])
        consumer = self.bus.consumer([self.prompts_topic], self.group_id, max_poll_records=self.limits.max_batch)
        producer = self.bus.producer()
        last_seen = time.monotonic()
        try:
            while not stop.is_set() and (max_requests is None or self.stats.requests < max_requests):
                messages = self._collect(consumer)
                if not messages:
                    if idle_exit_s is not None and time.monotonic() - last_seen > idle_exit_s:
                        break
                    continue
                last_seen = time.monotonic()
                records = self.handle(messages)
                for record in records:
                    key = record.request_id.encode() if record.request_id else None
                    producer.send(self.completions_topic, record.model_dump_json(exclude_none=True).encode(), key=key)
                producer.flush()
                consumer.commit(next_offsets(messages))
        finally:
            producer.close()
            consumer.close()
        return self.stats

    def _collect(self, consumer: Consumer) -> list[Message]:
        """Up to ``max_batch`` messages: wait for the first, then at most ``batch_window_s`` for more."""
        batch = consumer.poll(self.limits.max_batch, 0.5)
        deadline = time.monotonic() + self.limits.batch_window_s
        while batch and len(batch) < self.limits.max_batch and (left := deadline - time.monotonic()) > 0:
            batch += consumer.poll(self.limits.max_batch - len(batch), left)
        return batch

    def handle(self, messages: Sequence[Message]) -> list[CompletionRecord]:
        """One record per message, in order; generation runs in one batch for the valid ones."""
        records: list[CompletionRecord | None] = [None] * len(messages)
        valid: list[tuple[int, PromptMessage, PreparedRequest, int]] = []
        for index, message in enumerate(messages):
            request_id = None
            try:
                request = self._parse(message)
                request_id = request.request_id
                prepared, tokens = self._prepare(message, request)
                valid.append((index, request, prepared, tokens))
            except RequestRejected as exc:
                records[index] = self._error(message, request_id or exc.request_id, str(exc))
        if valid:
            try:
                generations = self.completer.complete([p for _, _, p, _ in valid])
            except Exception as exc:  # keep serving: the batch's requests get the reason instead
                log.exception("generation failed for a batch of %d", len(valid))
                generations = None
                for index, request, _, _ in valid:
                    records[index] = self._error(messages[index], request.request_id, f"generation failed: {exc}")
            if generations is not None:
                for (index, request, _, tokens), generation in zip(valid, generations, strict=True):
                    records[index] = CompletionRecord(
                        request_id=request.request_id, status="ok", completion=generation.text, adapter=generation.adapter,
                        prompt_tokens=tokens, new_tokens=generation.new_tokens, finished=generation.finished,
                        latency_ms=_age_ms(messages[index]), source_partition=messages[index].partition,
                        source_offset=messages[index].offset,
                    )
            self.stats.batches += 1
        done = [r for r in records if r is not None]
        self.stats.requests += len(done)
        self.stats.completions += sum(r.status == "ok" for r in done)
        self.stats.errors += sum(r.status == "error" for r in done)
        return done

    def _parse(self, message: Message) -> PromptMessage:
        try:
            text = message.value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestRejected(f"undecodable prompt: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RequestRejected(f"undecodable prompt: not JSON ({exc})") from exc
        try:
            request = PromptMessage.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            request_id = data.get("request_id") if isinstance(data, dict) else None
            raise RequestRejected(
                f"invalid prompt message: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                request_id if isinstance(request_id, str) else None,
            ) from exc
        return request

    def _prepare(self, message: Message, request: PromptMessage) -> tuple[PreparedRequest, int]:
        if not request.text.strip():
            raise RequestRejected("empty prompt: send the user's words in 'text'")
        if len(request.text) > self.limits.max_prompt_chars:
            raise RequestRejected(f"prompt too long: {len(request.text)} characters > {self.limits.max_prompt_chars}")
        if request.cell is None:
            raise RequestRejected("location has no cell: send 'location' as a cell id or {'cell': ...}")
        if _age_ms(message) > 1000 * self.limits.request_timeout_s:
            raise RequestRejected(f"timed out: waited {_age_ms(message) / 1000:.1f} s > {self.limits.request_timeout_s} s in the queue")
        try:
            prepared = self.completer.prepare(
                EdgeRequest(request.text, request.cell, request.user, request.ts, request.task or COMPLETION_TASK, request.adapter)
            )
        except UserError as exc:
            raise RequestRejected(str(exc)) from exc
        tokens = self.completer.lm.token_counts([prepared.model_input])[0]
        if tokens > self.completer.limits.max_input_tokens:
            raise RequestRejected(f"prompt too long: {tokens} tokens with context > {self.completer.limits.max_input_tokens}")
        return prepared, tokens

    def _error(self, message: Message, request_id: str | None, reason: str) -> CompletionRecord:
        return CompletionRecord(
            request_id=request_id, status="error", reason=reason, latency_ms=_age_ms(message),
            original_b64=base64.b64encode(message.value).decode(), source_partition=message.partition,
            source_offset=message.offset,
        )


def _age_ms(message: Message) -> float:
    return max(0.0, time.time() * 1000 - message.timestamp_ms)
