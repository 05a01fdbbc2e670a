"""The router's per-request decision and the link monitor's estimates (pure functions)."""

from __future__ import annotations

import pytest

from nm_toolkit.llm.router import LinkEstimate, LinkMonitor, RouterConfig, route

LINK = LinkEstimate(rtt_s=0.02, bandwidth_bps=8e6, cloud_queue=0, cloud_service_s=0.2, samples=3)


def test_confident_local_requests_stay_at_the_edge_and_the_rest_escalate() -> None:
    config = RouterConfig(confidence_threshold=0.8)
    assert route(0.95, True, 200, LINK, config).path == "edge"
    unsure = route(0.5, True, 200, LINK, config)
    assert unsure.path == "cloud" and "unsure" in unsure.reason
    knowledge = route(0.99, False, 200, LINK, config)  # the edge cannot answer this kind at all
    assert knowledge.path == "cloud" and "knowledge" in knowledge.reason


def test_threshold_extremes_send_everything_or_nothing_answerable_to_the_cloud() -> None:
    assert route(0.999, True, 200, LINK, RouterConfig(confidence_threshold=1.0)).path == "cloud"
    assert route(0.001, True, 200, LINK, RouterConfig(confidence_threshold=0.0)).path == "edge"
    with pytest.raises(ValueError):
        RouterConfig(confidence_threshold=1.5)


def test_a_request_the_cloud_cannot_answer_in_time_stays_at_the_edge() -> None:
    config = RouterConfig(confidence_threshold=0.9)
    slow = LinkEstimate(rtt_s=0.3, bandwidth_bps=1e5, cloud_queue=5, cloud_service_s=0.4, samples=9)
    expected = slow.cloud_seconds(1000)
    assert expected == pytest.approx(0.3 + 8 * 1000 / 1e5 + 6 * 0.4)
    late = route(0.2, True, 1000, slow, config, deadline_s=1.0)
    assert late.path == "edge" and "deadline" in late.reason
    assert route(0.2, True, 1000, slow, config, deadline_s=10.0).path == "cloud"


def test_the_monitor_measures_rtt_bandwidth_and_the_cloud_queue_from_probe_echoes() -> None:
    monitor = LinkMonitor(RouterConfig(default_rtt_s=0.5, default_bandwidth_bps=1.0))
    assert monitor.estimate().samples == 0 and monitor.estimate().rtt_s == 0.5  # the defaults, until measured
    monitor.observe(0.010, 100, cloud_queue=2, cloud_service_s=0.3)  # small probe
    monitor.observe(0.010 + 8 * 64_000 / 50e6, 64_100, cloud_queue=4, cloud_service_s=None)  # large probe: +64 kB
    link = monitor.estimate()
    assert link.samples == 2 and link.rtt_s == pytest.approx(0.010)
    assert link.bandwidth_bps == pytest.approx(50e6, rel=1e-6)
    assert link.cloud_queue == 4 and link.cloud_service_s == pytest.approx(0.3)
    monitor.observe(float("nan"), 100, 0, None)  # a broken clock reading is not a measurement
    assert monitor.estimate().samples == 2
