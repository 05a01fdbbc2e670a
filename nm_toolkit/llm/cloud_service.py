"""The cloud service: completed prompts the edges escalated in, answers out, exactly once.

A :class:`~nm_toolkit.bus.runtime.StreamService` (exactly-once, like the edge service: a request's
answer and the request's offset commit together, so a crash or a rebalance neither loses nor
repeats an answer). Requests are answered in one batch per poll by the cloud model with each
request's tenant adapter (:class:`~nm_toolkit.llm.netgpt.CloudResponder`). Link probes from the
edges are echoed on the cloud-status topic with the cloud's queue and recent service time, which
the edges' routers use.

The cloud sees only what crossed the link: the completed prompt, the tenant, timing. It never
sees a cell, a coordinate or a user profile (the edge's privacy guardrail checks every message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from nm_toolkit.bus.base import Message
from nm_toolkit.bus.deadletter import one_line
from nm_toolkit.bus.runtime import FATAL_ERRORS, Emitter, Rejected, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.llm.messages import AnswerRecord, CloudRequest, ProbeEcho
from nm_toolkit.llm.netgpt import CloudResponder
from nm_toolkit.llm.service import age_ms, request_id_of

log = logging.getLogger(__name__)


@dataclass
class CloudServiceStats:
    """Every request handled is answered once: ``requests == answers + errors``."""

    requests: int = 0
    answers: int = 0
    errors: int = 0
    late: int = 0
    probes: int = 0
    generation_batches: int = 0
    generation_failures: int = 0
    bytes_received: int = 0
    service_ms: float = 0.0  # recent time to answer one request (exponentially weighted)


class CloudService(StreamService):
    """Answers escalated requests in batches with per-tenant adapters; echoes link probes."""

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
    ) -> None:
        self.responder = responder
        self.requests = Topic(requests_topic, CloudRequest)
        self.inputs = [self.requests]
        self.answers_topic = answers_topic
        self.status_topic = status_topic
        self.outputs = [answers_topic, status_topic]
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.max_poll_records = max_batch
        self.counters = CloudServiceStats()

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Answer every request in ``messages`` (in one batch) and echo every probe. Never raises
        for a message; only faults of the bus or the machine (:data:`FATAL_ERRORS`) propagate."""
        requests: list[tuple[Message, CloudRequest]] = []
        probes: list[tuple[Message, CloudRequest]] = []
        for message in messages:
            try:
                request = self.requests.decode(message)
            except Rejected as exc:
                self._reject(message, request_id_of(message.value), exc.errors[0].reason, out)
                continue
            (probes if request.kind == "probe" else requests).append((message, request))
        for message, probe in probes:
            echo = ProbeEcho(
                probe_id=probe.request_id, edge=probe.edge, edge_sent_ms=probe.edge_sent_ms, probe_bytes=len(message.value),
                cloud_queue=len(requests), cloud_service_ms=self.counters.service_ms or None,
            )  # fmt: skip
            out.send(self.status_topic, echo, probe.edge)
            self.counters.probes += 1
        if requests:
            self._answer(requests, out)

    def _answer(self, requests: list[tuple[Message, CloudRequest]], out: Emitter) -> None:
        self.counters.generation_batches += 1
        started = time.perf_counter()
        try:
            generations = self.responder.answer([r.text for _, r in requests], [r.tenant for _, r in requests])
        except UserError as exc:  # a tenant without an adapter: answer the others without it
            if len(requests) > 1:
                for one in requests:
                    self._answer([one], out)
                return
            message, request = requests[0]
            self._reject(message, request.request_id, str(exc), out)
            return
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - keep serving: the batch's requests get the reason instead
            log.exception("cloud generation failed for a batch of %d", len(requests))
            self.counters.generation_failures += 1
            for message, request in requests:
                self._reject(message, request.request_id, f"generation failed: {type(exc).__name__}: {exc}", out)
            return
        per_request_ms = 1000 * (time.perf_counter() - started) / len(requests)
        self.counters.service_ms = per_request_ms if not self.counters.service_ms else 0.7 * self.counters.service_ms + 0.3 * per_request_ms
        now_ms = time.time() * 1000
        for (message, request), generation in zip(requests, generations, strict=True):
            late = request.deadline_ms is not None and now_ms > request.deadline_ms
            record = AnswerRecord(
                request_id=request.request_id, status="ok", served_by="cloud", answer=generation.text,
                route_reason="escalated by the edge", adapter=generation.adapter, tenant=request.tenant,
                new_tokens=generation.new_tokens, latency_ms=max(0.0, now_ms - request.arrived_ms), late=late,
                bytes_edge_to_cloud=len(message.value),
            )  # fmt: skip
            out.send(self.answers_topic, record.model_dump_json(exclude_none=True).encode(), request.request_id)
            self.counters.requests += 1
            self.counters.answers += 1
            self.counters.late += late
            self.counters.bytes_received += len(message.value)

    def _reject(self, message: Message, request_id: str | None, reason: str, out: Emitter) -> None:
        """Dead-letter ``message`` and answer it with the error."""
        out.dead_letter(message, reason)
        self.counters.requests += 1
        self.counters.errors += 1
        record = AnswerRecord(
            request_id=request_id, status="error", served_by="cloud", reason=one_line(reason), latency_ms=age_ms(message),
            bytes_edge_to_cloud=len(message.value),
        )  # fmt: skip
        out.send(self.answers_topic, record.model_dump_json(exclude_none=True).encode(), request_id or message.key)

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)


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
    )
