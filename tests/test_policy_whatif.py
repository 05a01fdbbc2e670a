"""Policy what-if (``policies.whatif``, ``nmt policy backtest``): scores computed by hand on small
traces, variants that must differ where their settings differ, and the guardrails on the trace's clock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collectors.synthetic import SyntheticNetgptLoad
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.schemas import PlaceAdapter, Reservation, ScaleCompute
from policies.adapter_placement import AdapterPlacementPolicy
from policies.autoscale import EdgeAutoscalePolicy
from policies.bandwidth import BandwidthReservationPolicy, EdgeLinkReservationPolicy
from policies.whatif import (
    Variant,
    VariantError,
    baseline,
    default_capacities,
    replay,
    score_adapters,
    score_autoscale,
    score_replay,
    score_reservations,
    spans,
    whatif_origins,
)

HOUR = pd.Timedelta(hours=1)


def hourly(columns: dict[str, list[float]]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.date_range("2024-01-01", periods=n, freq=HOUR, tz="UTC"))


def stamp(target: str) -> dict[str, object]:
    return {"idempotency_key": f"t:{target}", "policy": "t", "target": target, "reason": "test"}


def test_variant_parses_policy_settings_and_policy_params() -> None:
    variant = Variant.parse("headroom=0.3, edge_autoscale.prompts_per_replica=4,adapter_placement.adapter_prefix=city-")
    assert variant.policy == {"headroom": 0.3}
    assert variant.params == {"edge_autoscale": {"prompts_per_replica": 4}, "adapter_placement": {"adapter_prefix": "city-"}}
    settings = variant.settings(Settings())
    assert settings.policy.headroom == 0.3
    assert settings.controller.policy_params["edge_autoscale"] == {"prompts_per_replica": 4}
    assert Settings().policy.headroom != 0.3  # the base is untouched


@pytest.mark.parametrize("text", ["headroom", "headrom=0.3", "reserve_share=2"])
def test_a_bad_variant_is_a_one_line_user_error(text: str) -> None:
    with pytest.raises(VariantError):
        Variant.parse(text).settings(Settings())


def test_origins_and_the_spans_their_decisions_are_in_force() -> None:
    assert whatif_origins(10, 4, 2) == [4, 6, 8]
    assert spans([4, 6, 8], 10) == [(4, 6), (6, 8), (8, 10)]
    with pytest.raises(UserError, match="warm-up"):
        whatif_origins(10, 10, 1)


def test_reservation_scores_by_hand() -> None:
    # capacity 100, unreserved share 0.5: steps above 50 are at risk (60, 90, 70)
    frame = hourly({"a|traffic": [10, 60, 90, 20, 70, 30]})
    decisions = {
        0: [],
        2: [Reservation(**stamp("a"), bandwidth=95, capacity=100, forecast_peak=90)],  # covers 90, not step 3's need
        4: [Reservation(**stamp("a"), bandwidth=65, capacity=100, forecast_peak=60)],  # too little for 70
    }
    scores = score_reservations(frame, [0, 2, 4], decisions, [BandwidthReservationPolicy()], Settings(), {"a": 100}, 0.5)
    assert scores["overload_hours_at_risk"] == 3
    assert scores["overload_hours_avoided"] == 1  # the 90 at step 2
    assert scores["overload_hours_missed"] == 2
    reserved, unused = 95 * 2 + 65 * 2, (95 - 90) + (95 - 20) + 0 + (65 - 30)
    assert scores["reserved_unused_share"] == pytest.approx(unused / reserved)


def test_edge_link_reservations_are_scored_as_rates() -> None:
    # 450 kB per hour on the link = 1 kbit/s; unit 1 kbit/s: capacity 1.2, reservation 1.1
    frame = hourly({"edge-1|edge_to_cloud_bytes": [450_000.0, 450_000.0]})
    policy = EdgeLinkReservationPolicy(unit_kbps=1.0)
    assert policy.units_per_value(3600) * 450_000 == pytest.approx(1.0)
    decisions = {0: [Reservation(**stamp("edge-1>cloud"), bandwidth=1.1, capacity=1.2, forecast_peak=1.0)]}
    scores = score_reservations(frame, [0], decisions, [policy], Settings(), {"edge-1>cloud": 1.2}, 0.5)
    assert scores["overload_hours_avoided"] == 1 and scores["overload_hours_missed"] == 0  # one span: one step
    assert default_capacities(frame, [policy], 1.5) == {"edge-1>cloud": pytest.approx(1.5)}


def test_autoscale_and_adapter_scores_by_hand() -> None:
    # 3600 prompts per hour = 1 per second; 0.5 per second per replica: 2 replicas needed
    frame = hourly({"s|prompts": [3600.0, 3600.0, 3600.0], "s|demand.video.requests": [10.0, 20.0, 30.0],
                    "s|demand.web.requests": [1.0, 2.0, 3.0]})  # fmt: skip
    scaler = EdgeAutoscalePolicy(count_metrics=("prompts",), prompts_per_replica=0.5)
    decisions = {0: [], 1: [ScaleCompute(**stamp("s"), replicas=2)], 2: [ScaleCompute(**stamp("s"), replicas=1)]}
    scores = score_autoscale(frame, [0, 1, 2], decisions, [scaler], Settings())
    assert scores == {"compute_overload_hours": 2.0, "replica_hours": Settings().llm.initial_replicas + 2 + 1}
    placed = {0: [PlaceAdapter(**stamp("s"), adapter="video")], 1: [PlaceAdapter(**stamp("s"), adapter="web")], 2: []}
    world = Settings.model_validate({"policy": {"sites": {"s": ["s"]}, "class_adapters": {"video": "video", "web": "web"}}})
    scores = score_adapters(frame, [0, 1, 2], placed, [AdapterPlacementPolicy()], world)
    assert scores["cloud_calls_saved"] == 10 + 2 and scores["adapter_misses"] == 1 + 20 + 30 + 3


@pytest.fixture(scope="module")
def netgpt_trace() -> pd.DataFrame:
    return NETGPT.frame()


NETGPT = SyntheticNetgptLoad(n_sites=3, periods=24 * 9, seed=3)


def netgpt_settings(**values: object) -> Settings:
    """Settings for the synthetic NetGPT world (its sites and per-class adapters), with ``values``."""
    return Settings.model_validate({**values, "policy": NETGPT.policy_world()})


def test_replay_of_a_synthetic_netgpt_trace(netgpt_trace: pd.DataFrame) -> None:
    settings = netgpt_settings()
    names = ["edge_autoscale", "adapter_placement", "edge_link_reservation"]
    origins = whatif_origins(len(netgpt_trace), 24 * 7, 1)
    capacities = default_capacities(netgpt_trace.iloc[: origins[0]], [EdgeLinkReservationPolicy()], 1.15)
    assert set(capacities) == {"edge-0000>cloud", "edge-0001>cloud", "edge-0002>cloud"}
    variants = [Variant.parse("edge_autoscale.headroom=1.0"), Variant.parse("edge_autoscale.headroom=0")]
    few, many = replay(netgpt_trace, settings, variants, policy_names=names, model="ses", origins=origins, capacities=capacities)
    kinds = {d.kind for made in few.decisions.values() for d in made}
    assert kinds >= {"scale_compute", "place_adapter"}
    scores = {r.variant.name: score_replay(netgpt_trace, origins, r, capacities, 0.8) for r in (few, many)}
    none = score_replay(netgpt_trace, origins, baseline(few), capacities, 0.8)
    small, large = scores[few.variant.name], scores[many.variant.name]
    # twice the forecast peak takes more replicas than the peak itself, and overloads less often
    assert small["replica_hours"] > large["replica_hours"] > none["replica_hours"]
    assert small["compute_overload_hours"] <= large["compute_overload_hours"] < none["compute_overload_hours"]
    assert none["adapter_hit_rate"] == 0 and 0.3 < small["adapter_hit_rate"] <= 1
    assert small["cloud_calls_saved"] + small["adapter_misses"] == none["adapter_misses"]


def test_the_guardrails_count_changes_on_the_traces_clock(netgpt_trace: pd.DataFrame) -> None:
    """Rounds an hour apart in the trace are each a fresh minute for the change-rate guardrail,
    however fast the replay runs (on the wall clock, 2 changes a minute would admit 2 changes in all)."""
    settings = netgpt_settings(controller={"guardrails": {"max_changes_per_minute": 2}})
    origins = whatif_origins(len(netgpt_trace), 24 * 7, 1)
    (record,) = replay(netgpt_trace, settings, [Variant.parse("")], policy_names=["adapter_placement"], model="last_value", origins=origins, capacities={})
    assert record.by_rule["rate"] > 0  # 3 sites x 2 adapters a round: the cap bites
    changes, previous = 0, set()
    for origin in origins:
        placed = {(d.target, d.adapter) for d in record.decisions[origin]}
        changes += len(placed - previous)
        previous = placed
    assert changes > 2 * 2


def test_synthetic_netgpt_load_is_seeded_and_consistent(netgpt_trace: pd.DataFrame) -> None:
    again = SyntheticNetgptLoad(n_sites=3, periods=24 * 9, seed=3).frame()
    assert NETGPT.sites() == ["edge-0000", "edge-0001", "edge-0002"]
    pd.testing.assert_frame_equal(netgpt_trace, again)
    site = netgpt_trace.filter(like="edge-0001|")
    demand = site.filter(like="demand.").sum(axis=1)
    np.testing.assert_array_equal(demand, site["edge-0001|prompts"])  # every prompt has one class
    assert (site["edge-0001|escalated"] <= site["edge-0001|prompts"]).all()
