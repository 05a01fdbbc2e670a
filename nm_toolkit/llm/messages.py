"""Records of the edge-cloud collaboration on the bus: what crosses the link, and the answers.

* :class:`CloudRequest` (edge -> cloud, ``topics.cloud_requests``): a completed prompt the edge
  escalated, or a link probe. Only fields on the privacy allow-list
  (:data:`nm_toolkit.llm.privacy.DEFAULT_ALLOWED_FIELDS`) exist, and the edge checks every one by
  content before it is sent.
* :class:`ProbeEcho` (cloud -> edge, ``topics.cloud_status``): the cloud's reply to a probe, with
  its queue and service time, from which the edge measures the live path.
* :class:`AnswerRecord` (``topics.answers``, keyed by request id): exactly one per request,
  whichever path served it.
"""

from __future__ import annotations

import time
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from nm_toolkit.bus.deadletter import one_line
from nm_toolkit.schemas import Identifier

ServedBy = Literal["edge", "cloud"]


class CloudRequest(BaseModel):
    """A request the edge sends to the cloud: a completed prompt, or a probe of the link."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["request", "probe"] = "request"
    request_id: Identifier
    text: str = Field(default="", max_length=4000, description="the completed prompt (empty for a probe)")
    tenant: Identifier | None = None
    service_class: Identifier | None = None
    deadline_ms: float | None = Field(default=None, description="when the user stops waiting (epoch ms)")
    edge: Identifier = Field(description="the edge site that sent it")
    edge_sent_ms: float = Field(description="when the edge sent it (epoch ms), for the round trip")
    arrived_ms: float = Field(description="when the user's prompt reached the bus (epoch ms): latency counts from here")
    padding: str = Field(default="", max_length=1_000_000, description="probe bytes, for the bandwidth estimate")


class ProbeEcho(BaseModel):
    """The cloud's reply to a probe: the edge computes the round trip from ``edge_sent_ms``."""

    model_config = ConfigDict(extra="forbid")

    probe_id: Identifier
    edge: Identifier
    edge_sent_ms: float
    probe_bytes: int = Field(ge=0)
    cloud_queue: int = Field(ge=0, description="requests waiting at the cloud when the probe was read")
    cloud_service_ms: float | None = Field(default=None, ge=0, description="recent time to answer one request")


class AnswerRecord(BaseModel):
    """The answer to one request (or the error that stopped it), and how it was served."""

    request_id: str | None
    status: Literal["ok", "error"]
    served_by: ServedBy
    answer: str | None = None
    route_reason: str | None = None
    confidence: float | None = None
    kind: str | None = None
    adapter: str | None = None
    tenant: str | None = None
    new_tokens: int | None = None
    latency_ms: float = Field(description="from the prompt's arrival on the bus to this record")
    late: bool = False
    bytes_edge_to_cloud: int = 0
    reason: str | None = None


def error_answer(request_id: str | None, reason: str, served_by: ServedBy, latency_ms: float, bytes_edge_to_cloud: int = 0) -> bytes:
    """The encoded answer that tells a requester why its request failed (one line of reason)."""
    record = AnswerRecord(
        request_id=request_id, status="error", served_by=served_by, reason=one_line(reason), latency_ms=latency_ms,
        bytes_edge_to_cloud=bytes_edge_to_cloud,
    )  # fmt: skip
    return record.model_dump_json(exclude_none=True).encode()


class LoadWindow:
    """What an LLM service did since its last load report, as telemetry for the management loop.

    The services report their own load on the telemetry topic, through the same collector as
    network telemetry, so their series are forecast like any other and the policies read them.
    Reports are counts per interval (``prompts``, ``escalated``, ...): the collector's windows sum
    them into counts per window whatever the report interval, which is what a window of events
    means (edge autoscaling reads ``SITE|prompts`` as such, :mod:`policies.autoscale`).
    """

    def __init__(self, source: str, interval_s: float) -> None:
        self.source = source
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.counts: dict[str, float] = {}

    def add(self, metric: str, value: float = 1.0) -> None:
        self.counts[metric] = self.counts.get(metric, 0.0) + value

    def due(self) -> bool:
        return self.interval_s > 0 and time.monotonic() - self.started >= self.interval_s

    def report(self) -> bytes:
        """The window's counts as one telemetry message (``{"records": [...]}``); the window starts again."""
        ts = time.time()
        records = [{"ts": ts, "source": self.source, "metric": metric, "value": round(value, 6)} for metric, value in sorted(self.counts.items())]
        self.started, self.counts = time.monotonic(), {}
        return orjson.dumps({"records": records})
