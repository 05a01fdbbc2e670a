"""Where each request is best served: answered at the edge, or its completed prompt sent to the cloud.

NetGPT's edge answers what it can answer well and escalates the rest (the Hybrid-LLM / RouteLLM
trade-off: answer quality against the share of requests the larger model serves). The decision
is per request and uses what the edge knows at that moment:

* the edge model's own confidence in its completion (the probability of the grounded candidate it
  chose, :class:`~nm_toolkit.llm.grounding.GroundedChoice`), and whether the chosen kind of request
  is one the edge can answer from its local facts at all;
* the edge-to-cloud link as measured on the live path (:class:`LinkMonitor`: probe round trips
  through the bus and the cloud service, not configured constants);
* the cloud's queue as the cloud reports it, and the request's deadline.

:func:`route` is a pure function of those inputs; :class:`LinkMonitor` keeps the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Path = Literal["edge", "cloud"]


@dataclass(frozen=True)
class RouterConfig:
    """The router's one tunable knob and its link defaults.

    ``confidence_threshold``: a request the edge can answer locally stays at the edge when the
    edge model's confidence is at least this (1.0 sends every request to the cloud, 0.0 keeps every
    locally answerable one at the edge). ``cloud_service_s`` is the cloud's answer time assumed
    before the cloud has reported one; ``default_rtt_s`` and ``default_bandwidth_bps`` stand in until
    the first probe returns.
    """

    confidence_threshold: float = 0.9
    cloud_service_s: float = 0.5
    default_rtt_s: float = 0.05
    default_bandwidth_bps: float = 10e6

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], not {self.confidence_threshold}")


@dataclass(frozen=True)
class LinkEstimate:
    """The edge-to-cloud path as last measured (``samples`` 0: the configured defaults)."""

    rtt_s: float
    bandwidth_bps: float
    cloud_queue: int
    cloud_service_s: float
    samples: int

    def cloud_seconds(self, request_bytes: int) -> float:
        """Expected time until the cloud's answer: a round trip, the transfer, the queue ahead and the answer."""
        return self.rtt_s + 8 * request_bytes / self.bandwidth_bps + (self.cloud_queue + 1) * self.cloud_service_s


@dataclass(frozen=True)
class RouteDecision:
    path: Path
    reason: str
    expected_cloud_s: float


def route(
    confidence: float,
    local_capable: bool,
    request_bytes: int,
    link: LinkEstimate,
    config: RouterConfig,
    deadline_s: float | None = None,
) -> RouteDecision:
    """The path for one request.

    ``confidence`` is the edge model's probability for its completion; ``local_capable`` whether
    the edge can answer that kind of request from its own facts; ``request_bytes`` the size of
    the completed prompt that would cross the link; ``deadline_s`` the time the request has left
    (None: no deadline). A request the cloud cannot answer within its deadline stays at the edge
    (a best-effort answer in time beats a better one too late).
    """
    expected = link.cloud_seconds(request_bytes)
    if local_capable and confidence >= config.confidence_threshold:
        return RouteDecision("edge", f"edge confident ({confidence:.2f} >= {config.confidence_threshold:.2f})", expected)
    if deadline_s is not None and expected > deadline_s:
        return RouteDecision("edge", f"deadline: cloud expected in {expected:.2f} s > {deadline_s:.2f} s left", expected)
    why = "needs the cloud's knowledge" if not local_capable else f"edge unsure ({confidence:.2f} < {config.confidence_threshold:.2f})"
    return RouteDecision("cloud", why, expected)


@dataclass
class LinkMonitor:
    """Exponentially weighted measurements of the edge-to-cloud path from probe round trips.

    A probe is a small message the edge sends through the cloud-requests topic and the cloud
    echoes with its queue length and its recent service time; the echo's arrival minus the
    probe's send time is the live path's round trip (both bus hops and the cloud's polling
    included, as a real request sees them). Bandwidth comes from pairs of probes of different
    sizes (the extra bytes over the extra time), which cancels the fixed part of the delay.
    """

    config: RouterConfig = field(default_factory=RouterConfig)
    alpha: float = 0.3
    _rtt_s: float | None = None
    _bandwidth_bps: float | None = None
    _queue: int = 0
    _service_s: float | None = None
    _samples: int = 0
    _small: tuple[int, float] | None = None  # (bytes, rtt) of the last small probe

    def observe(self, rtt_s: float, probe_bytes: int, cloud_queue: int, cloud_service_s: float | None) -> None:
        """Record one probe echo."""
        if not math.isfinite(rtt_s) or rtt_s < 0:
            return
        self._samples += 1
        self._queue = max(0, cloud_queue)
        if cloud_service_s is not None and cloud_service_s > 0:
            self._service_s = _ewma(self._service_s, cloud_service_s, self.alpha)
        if self._small is None or probe_bytes <= self._small[0]:
            self._small = (probe_bytes, rtt_s)
            self._rtt_s = _ewma(self._rtt_s, rtt_s, self.alpha)
            return
        extra_bytes, extra_s = probe_bytes - self._small[0], rtt_s - self._small[1]
        if extra_s > 0:
            self._bandwidth_bps = _ewma(self._bandwidth_bps, 8 * extra_bytes / extra_s, self.alpha)

    def estimate(self) -> LinkEstimate:
        return LinkEstimate(
            rtt_s=self._rtt_s if self._rtt_s is not None else self.config.default_rtt_s,
            bandwidth_bps=self._bandwidth_bps if self._bandwidth_bps is not None else self.config.default_bandwidth_bps,
            cloud_queue=self._queue,
            cloud_service_s=self._service_s if self._service_s is not None else self.config.cloud_service_s,
            samples=self._samples,
        )


def _ewma(previous: float | None, value: float, alpha: float) -> float:
    return value if previous is None else (1 - alpha) * previous + alpha * value
