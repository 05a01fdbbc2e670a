"""Built-in policies, the structured intent model, and the registry's isolation of bad policies."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import Acl, QosQueue, RateLimit, Reservation, ScaleCompute
from policies import Policy, PolicyContext
from policies.adapter_placement import AdapterPlacementPolicy, popular_adapters
from policies.autoscale import CloudAutoscalePolicy, EdgeAutoscalePolicy, replicas_for
from policies.bandwidth import BandwidthReservationPolicy, DemandReservationPolicy
from policies.intent_qos_acl import IntentQosAclPolicy
from policies.intents import NetworkIntent
from policies.registry import evaluate_policies, run_policies
from tests.test_policy_helpers import context, forecast


def test_bandwidth_reservation_reserves_upper_bound_with_headroom_capped_at_capacity() -> None:
    ctx = context(forecasts={
        "cell-1|throughput_mbps": forecast("cell-1|throughput_mbps", [50, 85, 70]),
        "cell-2|throughput_mbps": forecast("cell-2|throughput_mbps", [10, 20, 30]),  # below 80 %
        "cell-3|throughput_mbps": forecast("cell-3|throughput_mbps", [99.0]),
    })
    decisions = BandwidthReservationPolicy().decide(ctx)
    by_target = {d.target: d for d in decisions}
    assert set(by_target) == {"cell-1", "cell-3"}
    assert isinstance(by_target["cell-1"], Reservation)
    assert by_target["cell-1"].bandwidth == pytest.approx(93.5)  # 85 * 1.1
    assert by_target["cell-3"].bandwidth == 100.0  # capped
    assert "85.0" in by_target["cell-1"].reason
    # same forecast, same key: re-deciding refreshes instead of duplicating
    assert [d.idempotency_key for d in BandwidthReservationPolicy().decide(ctx)] == [d.idempotency_key for d in decisions]


def test_intents_become_acl_qos_and_rate_limit_decisions_with_their_tenant() -> None:
    intents = [
        NetworkIntent(id="i1", tenant="acme", target="cell-1", action="block",
                      traffic={"protocol": "tcp", "port": 23, "src": "10.9.0.0/16"}),
        NetworkIntent(id="i2", tenant="acme", target="cell-1", action="prioritize", qos="critical",
                      traffic={"protocol": "udp", "port": 5060}, priority=300),
        NetworkIntent(id="i3", tenant="acme", target="cell-2", action="limit", rate_kbps=2000),
    ]
    acl, qos, limit = IntentQosAclPolicy().decide(context(intents=intents))
    assert isinstance(acl, Acl) and acl.action == "deny"
    assert acl.match == {"ipv4_src": "10.9.0.0/16", "ip_proto": 6, "tcp_dst": 23}
    assert isinstance(qos, QosQueue) and qos.queue_id == 3 and qos.priority == 300
    assert isinstance(limit, RateLimit) and limit.rate_kbps == 2000
    assert {d.tenant for d in (acl, qos, limit)} == {"acme"}


def test_intent_needs_the_arguments_of_its_action() -> None:
    with pytest.raises(ValidationError, match="needs a qos class"):
        NetworkIntent(id="x", tenant="t", target="c", action="prioritize")
    with pytest.raises(ValidationError, match="needs rate_kbps"):
        NetworkIntent(id="x", tenant="t", target="c", action="limit")


def test_autoscaling_covers_forecast_prompt_peak() -> None:
    assert replicas_for(0.0, 5.0, 0.2, 1, 16) == 1
    assert replicas_for(21.0, 5.0, 0.2, 1, 16) == 6  # 25.2 / 5 -> 6
    assert replicas_for(1000.0, 5.0, 0.2, 1, 16) == 16
    ctx = context(forecasts={
        "edge-a|prompts_per_s": forecast("edge-a|prompts_per_s", [4.0, 21.0]),
        "edge-a|throughput_mbps": forecast("edge-a|throughput_mbps", [500.0]),
    })
    (decision,) = EdgeAutoscalePolicy().decide(ctx)
    assert isinstance(decision, ScaleCompute) and decision.target == "edge-a" and decision.replicas == 6


def test_cloud_autoscaling_reads_the_cloud_services_own_requests_and_nothing_of_the_edge() -> None:
    ctx = context(forecasts={
        "cloud|requests": forecast("cloud|requests", [36_000.0, 90_000.0]),  # per hour: 10 and 25 requests/s
        "cloud|tokens": forecast("cloud|tokens", [4e6, 4e6]),
        "cloud|adapter.walk.requests": forecast("cloud|adapter.walk.requests", [90_000.0, 90_000.0]),
        "edge-a|prompts": forecast("edge-a|prompts", [36_000.0, 36_000.0]),
    })  # fmt: skip
    (decision,) = CloudAutoscalePolicy().decide(ctx)
    assert isinstance(decision, ScaleCompute) and decision.target == "cloud" and decision.policy == "cloud_autoscale"
    assert decision.replicas == 3  # 25/s * 1.2 / 10 per replica
    assert "forecast cloud requests at cloud" in decision.reason and "cloud|requests" in decision.reason
    (edge,) = EdgeAutoscalePolicy().decide(ctx)  # the edge's rule leaves the cloud's series alone
    assert edge.target == "edge-a"


def test_adapter_placement_takes_popular_adapters_per_site() -> None:
    assert popular_adapters({"a": 6, "b": 3, "c": 1}, top_k=2, min_share=0.2) == [("a", 0.6), ("b", 0.3)]
    assert popular_adapters({}, 2, 0.1) == []
    ctx = context(adapter_popularity={"edge-a": {"lora-traffic": 70, "lora-faults": 25, "lora-rare": 5}})
    placed = AdapterPlacementPolicy(top_k=3, min_share=0.1).decide(ctx)
    assert [(d.target, d.adapter) for d in placed] == [("edge-a", "lora-traffic"), ("edge-a", "lora-faults")]


SITES = PolicySettings(sites={"edge-north": ["cell-00*"], "edge-south": ["cell-01*"]},
                       class_adapters={"video": "lora-video", "*": "completion"})  # fmt: skip


def test_adapter_placement_counts_a_cells_demand_at_the_site_serving_it_for_the_adapter_of_its_class() -> None:
    """The edge's ``adapter.<name>.requests`` reports and each cell's demand per class add up at
    the site that serves the cell (``policy.sites``), for the adapter that serves the class
    (``policy.class_adapters``); network series are not popularity, and a cell no site serves
    places nothing."""
    ctx = context(settings=SITES, forecasts={
        "edge-north|adapter.completion.requests": forecast("edge-north|adapter.completion.requests", [50.0, 40.0]),
        "cell-0003|demand.video.requests": forecast("cell-0003|demand.video.requests", [30.0, 30.0]),
        "cell-0007|demand.web.requests": forecast("cell-0007|demand.web.requests", [20.0, 0.0]),
        "cell-0102|demand.video.requests": forecast("cell-0102|demand.video.requests", [1.0, 1.0]),
        "cell-9999|demand.video.requests": forecast("cell-9999|demand.video.requests", [500.0, 500.0]),
        "edge-north|adapter.lora-video.requests": forecast("edge-north|adapter.lora-video.requests", [5.0, 5.0]),
        "edge-north|traffic": forecast("edge-north|traffic", [1000.0, 1000.0]),
    })  # fmt: skip
    placed = AdapterPlacementPolicy(top_k=3, min_share=0.1).decide(ctx)
    assert [(d.target, d.adapter) for d in placed] == [
        ("edge-north", "completion"), ("edge-north", "lora-video"), ("edge-south", "lora-video"),
    ]  # fmt: skip
    assert "39%" in placed[1].reason  # (60 + 10) of the 180 forecast requests at edge-north


def test_edge_autoscaling_scales_the_serving_site_and_counts_a_prompt_once() -> None:
    """A site's own prompt reports and its cells' demand count the same prompts: the larger
    family stands, and cells' demand scales the site that serves them, never a cell."""
    per_hour = 3600.0
    ctx = context(settings=SITES, forecasts={
        "edge-north|prompts": forecast("edge-north|prompts", [10 * per_hour]),
        "cell-0001|demand.video.requests": forecast("cell-0001|demand.video.requests", [6 * per_hour]),
        "cell-0002|demand.web.requests": forecast("cell-0002|demand.web.requests", [6 * per_hour]),
        "cell-0105|demand.web.requests": forecast("cell-0105|demand.web.requests", [21 * per_hour]),
    })  # fmt: skip
    decisions = {d.target: d for d in EdgeAutoscalePolicy().decide(ctx)}
    assert set(decisions) == {"edge-north", "edge-south"}
    assert decisions["edge-north"].replicas == 3  # max(10, 6 + 6) = 12/s * 1.2 / 5 -> 3 (not 22/s -> 6)
    assert decisions["edge-south"].replicas == 6  # 21/s * 1.2 / 5


def test_demand_reservation_adds_up_a_cells_classes_and_leaves_network_series_alone() -> None:
    """The Mbit/s a cell's users ask for (one series per service class, from their prompts' intents)
    add up at the cell; the network-traffic rule keeps the busiest series of a target instead."""
    ctx = context(settings=PolicySettings(default_capacity=100.0), forecasts={
        "cell-1|demand.video.mbps": forecast("cell-1|demand.video.mbps", [40.0, 50.0]),
        "cell-1|demand.gaming.mbps": forecast("cell-1|demand.gaming.mbps", [35.0, 20.0]),
        "cell-2|demand.web.mbps": forecast("cell-2|demand.web.mbps", [10.0]),
        "cell-1|traffic": forecast("cell-1|traffic", [90.0]),
        "cell-1|throughput": forecast("cell-1|throughput", [85.0]),
    })  # fmt: skip
    (demand,) = DemandReservationPolicy().decide(ctx)
    assert (demand.target, demand.forecast_peak, demand.policy) == ("cell-1", 85.0, "demand_reservation")
    assert demand.bandwidth == pytest.approx(93.5) and "and 1 more" in demand.reason
    (traffic,) = BandwidthReservationPolicy().decide(ctx)  # one reservation per target: the busiest series
    assert (traffic.target, traffic.forecast_peak, traffic.series_id) == ("cell-1", 90.0, "cell-1|traffic")


def test_bandwidth_reservation_leaves_the_llm_services_own_load_alone() -> None:
    ctx = context(
        settings=PolicySettings(default_capacity=100.0),
        forecasts={s: forecast(s, [95.0]) for s in ("cell-1|x", "edge-a|prompts", "edge-a|edge_to_cloud_bytes", "cell-2|demand.web.requests")},
    )
    assert [d.target for d in BandwidthReservationPolicy().decide(ctx)] == ["cell-1"]


def test_dry_run_setting_marks_every_decision() -> None:
    ctx = context(
        settings=PolicySettings(default_capacity=100.0, dry_run=True),
        forecasts={"cell-1|x": forecast("cell-1|x", [95.0])},
    )
    assert all(d.dry_run for d in BandwidthReservationPolicy().decide(ctx))


class _Raises(Policy):
    name = "raises"

    def decide(self, context: PolicyContext) -> list:
        raise ZeroDivisionError("bug")


class _Sleeps(Policy):
    name = "sleeps"

    def decide(self, context: PolicyContext) -> list:
        time.sleep(3)
        return []


def test_a_failing_or_overrunning_policy_is_skipped_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(forecasts={"cell-1|x": forecast("cell-1|x", [95.0])})
    policies = [_Raises(), _Sleeps(), BandwidthReservationPolicy()]
    runs = evaluate_policies(policies, ctx, time_budget_s=0.3)
    assert [r.status for r in runs] == ["failed", "overrun", "ok"]
    assert "ZeroDivisionError" in runs[0].error and "0.3 s" in runs[1].error
    assert len(runs[2].decisions) == 1
    assert [d.target for d in run_policies(policies, ctx, time_budget_s=0.3)] == ["cell-1"]
    assert "overran" in caplog.text and "failed and was skipped" in caplog.text
