"""The cloud service: completed prompts the edges escalated in, answers out, exactly once.

A :class:`~nm_toolkit.bus.runtime.StreamService` (exactly-once, like the edge service: a request's
answer and the request's offset commit together, so a crash or a rebalance neither loses nor
repeats an answer). Requests are answered by the cloud model with each request's tenant adapter
(:class:`~nm_toolkit.llm.netgpt.CloudResponder`) under **continuous batching**
(:class:`~nm_toolkit.llm.batching.ContinuousBatcher`): a request joins the running decode batch as
soon as it is read, between two token steps, and leaves it when it ends, so a short answer never
waits for a long one and a new request never waits for a batch to finish. Outputs are released in
each partition's offset order and the runtime commits only up to the first unreleased message
(:meth:`CloudService.committable`): a restart re-reads exactly the unfinished requests.

Link probes from the edges are echoed on the cloud-status topic with the cloud's queue and recent
service time, which the edges' routers use. The cloud sees only what crossed the link: the
completed prompt, the tenant, timing; never a cell, a coordinate or a user profile (the edge's
privacy guardrail checks every message).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel

from nm_toolkit.bus.base import Message, TopicPartition
from nm_toolkit.bus.runtime import FATAL_ERRORS, Emitter, Progress, Rejected, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.llm.batching import BatcherConfig, Completed, ContinuousBatcher
from nm_toolkit.llm.city_qa import cloud_prompt
from nm_toolkit.llm.messages import AnswerRecord, CloudRequest, LoadWindow, ProbeEcho, error_answer
from nm_toolkit.llm.netgpt import CloudResponder
from nm_toolkit.llm.service import age_ms, request_id_of

log = logging.getLogger(__name__)

STEP_BUDGET_S = 0.05
"""Token steps run per tick before the runner polls again: new requests join within about this."""


@dataclass
class CloudServiceStats:
    """Every request handled is answered once: ``requests == answers + errors``."""

    requests: int = 0
    answers: int = 0
    errors: int = 0
    late: int = 0
    probes: int = 0
    in_flight: int = 0
    decode_steps: int = 0
    generation_failures: int = 0
    bytes_received: int = 0
    service_ms: float = 0.0  # recent time from submission to answer (exponentially weighted)


@dataclass
class _Entry:
    """One input message and its outputs, released in its partition's offset order."""

    message: Message
    request: CloudRequest | None = None
    sends: list[tuple[str, bytes | BaseModel, str | bytes | None]] = field(default_factory=list)
    dead_letter: str | None = None
    ready: bool = True


class CloudService(StreamService):
    """Answers escalated requests under continuous batching with per-tenant adapters; echoes probes."""

    name = "cloud"
    exactly_once = True

    def __init__(
        self,
        responder: CloudResponder,
        *,
        requests_topic: str,
        answers_topic: str,
        status_topic: str,
        group_id: str,
        dead_letter_topic: str,
        max_batch: int = 16,
        telemetry_topic: str | None = None,
        site: str = "cloud",
        load_interval_s: float = 60.0,
    ) -> None:
        self.responder = responder
        self.requests = Topic(requests_topic, CloudRequest)
        self.inputs = [self.requests]
        self.answers_topic = answers_topic
        self.status_topic = status_topic
        self.telemetry_topic = telemetry_topic
        self.outputs = [answers_topic, status_topic, *([telemetry_topic] if telemetry_topic else [])]
        self.site = site
        self.load = LoadWindow(site, load_interval_s if telemetry_topic else 0.0)
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.max_poll_records = max_batch
        limits = responder.limits
        self.batcher_config = BatcherConfig(max_batch_size=2 * max_batch, max_prefill=max_batch, max_context=limits.max_input_tokens + limits.max_new_tokens)
        self.counters = CloudServiceStats()
        self._batcher: ContinuousBatcher | None = None
        self._queues: dict[TopicPartition, deque[_Entry]] = {}
        self._generating: dict[int, _Entry] = {}

    # -- the runtime's hooks -----------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._generating)

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Queue every message's outputs: requests join the running batch, probes and rejects are
        ready at once. Never raises for a message; only faults of the bus or the machine
        (:data:`FATAL_ERRORS`) propagate."""
        for message in messages:
            entry = _Entry(message)
            self._queues.setdefault(message.topic_partition, deque()).append(entry)
            try:
                request = self.requests.decode(message)
            except Rejected as exc:
                self._reject(entry, request_id_of(message.value), exc.errors[0].reason)
                continue
            entry.request = request
            if request.kind == "probe":
                self._echo(entry, request)
                continue
            try:
                [adapter] = self.responder.adapters([request.tenant])
                handle = self.batcher.submit(cloud_prompt(request.text), adapter, self.responder.limits)
            except UserError as exc:  # an unknown tenant, a prompt longer than the model's context
                self._reject(entry, request.request_id, str(exc))
                continue
            entry.ready = False
            self._generating[handle] = entry
        self.counters.in_flight = len(self._generating)
        self._release(out)

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """Decode for up to :data:`STEP_BUDGET_S` (until everything is answered when ``final``),
        then release what is ready."""
        started = time.monotonic()
        while self._generating and (final or time.monotonic() - started < STEP_BUDGET_S):
            try:
                finished = self.batcher.step()
            except FATAL_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving: the running batch's requests get the reason
                log.exception("cloud generation failed with %d requests in flight", len(self._generating))
                self._fail_all(f"generation failed: {type(exc).__name__}: {exc}")
                break
            self.counters.decode_steps += 1
            for completed in finished:
                self._answered(completed)
        self.counters.in_flight = len(self._generating)
        self._release(out)
        if self.telemetry_topic and (self.load.due() or (final and self.load.counts)):
            # the cloud's own load, as counts: requests, tokens, adapter.<tenant adapter>.requests
            out.send(self.telemetry_topic, self.load.report(), self.site)
        return False

    def committable(self, pending: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, int]:
        """Up to the first message of each partition whose outputs are not released yet."""
        out = dict(pending)
        for tp, queue in self._queues.items():
            if queue and tp in out:
                out[tp] = min(out[tp], queue[0].message.offset)
        return out

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget the requests of partitions read again elsewhere (or here, after an abort)."""
        for tp in partitions:
            self._queues.pop(tp, None)
        self._generating = {h: e for h, e in self._generating.items() if e.message.topic_partition not in partitions}
        if not self._generating:
            self._batcher = None  # nothing of value running: start clean

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)

    # -- work ----------------------------------------------------------------------------------
    @property
    def batcher(self) -> ContinuousBatcher:
        if self._batcher is None:
            self._batcher = ContinuousBatcher(self.responder.lm, self.batcher_config)
        return self._batcher

    def _answered(self, completed: Completed) -> None:
        entry = self._generating.pop(completed.handle, None)
        if entry is None or entry.request is None:  # its partition was revoked meanwhile
            return
        request, generation = entry.request, completed.generation
        elapsed_ms = 1000 * (completed.done - completed.submitted)
        self.counters.service_ms = elapsed_ms if not self.counters.service_ms else 0.8 * self.counters.service_ms + 0.2 * elapsed_ms
        now_ms = time.time() * 1000
        late = request.deadline_ms is not None and now_ms > request.deadline_ms
        record = AnswerRecord(
            request_id=request.request_id, status="ok", served_by="cloud", answer=generation.text,
            route_reason="escalated by the edge", adapter=generation.adapter, tenant=request.tenant,
            new_tokens=generation.new_tokens, latency_ms=max(0.0, now_ms - request.arrived_ms), late=late,
            bytes_edge_to_cloud=len(entry.message.value),
        )  # fmt: skip
        entry.sends.append((self.answers_topic, record.model_dump_json(exclude_none=True).encode(), request.request_id))
        entry.ready = True
        self.counters.requests += 1
        self.counters.answers += 1
        self.counters.late += late
        self.load.add("requests")
        self.load.add("tokens", generation.new_tokens)
        self.load.add(f"adapter.{generation.adapter}.requests")
        self.counters.bytes_received += len(entry.message.value)

    def _fail_all(self, reason: str) -> None:
        for entry in self._generating.values():
            self._reject(entry, entry.request.request_id if entry.request else None, reason)
        self.counters.generation_failures += 1
        self._generating.clear()
        self._batcher = None

    def _echo(self, entry: _Entry, probe: CloudRequest) -> None:
        waiting = self._batcher.waiting + self._batcher.active if self._batcher is not None else 0
        echo = ProbeEcho(
            probe_id=probe.request_id, edge=probe.edge, edge_sent_ms=probe.edge_sent_ms, probe_bytes=len(entry.message.value),
            cloud_queue=waiting, cloud_service_ms=self.counters.service_ms or None,
        )  # fmt: skip
        entry.sends.append((self.status_topic, echo, probe.edge))
        self.counters.probes += 1

    def _reject(self, entry: _Entry, request_id: str | None, reason: str) -> None:
        """Answer ``entry`` with the error and dead-letter its message, when it is released."""
        answer = error_answer(request_id, reason, "cloud", age_ms(entry.message), len(entry.message.value))
        entry.sends.append((self.answers_topic, answer, request_id or entry.message.key))
        entry.dead_letter = reason
        entry.ready = True
        self.counters.requests += 1
        self.counters.errors += 1

    def _release(self, out: Emitter) -> None:
        """Send the outputs of every partition's ready head entries, in offset order."""
        for queue in self._queues.values():
            while queue and queue[0].ready:
                entry = queue.popleft()
                if entry.dead_letter is not None:
                    out.dead_letter(entry.message, entry.dead_letter)
                for topic, value, key in entry.sends:
                    out.send(topic, value, key)


def cloud_service(settings: Settings, responder: CloudResponder) -> CloudService:
    """The cloud service the settings describe, answering with ``responder``
    (:func:`nm_toolkit.llm.deployment.cloud_responder` builds the configured one)."""
    cfg = settings.llm
    return CloudService(
        responder,
        requests_topic=settings.topics.cloud_requests,
        answers_topic=settings.topics.answers,
        status_topic=settings.topics.cloud_status,
        group_id=cfg.cloud_group_id,
        dead_letter_topic=cfg.cloud_dead_letter_topic,
        max_batch=cfg.max_batch,
        telemetry_topic=settings.topics.telemetry if cfg.load_interval_s > 0 else None,
        site=cfg.cloud_site,
        load_interval_s=cfg.load_interval_s,
    )
