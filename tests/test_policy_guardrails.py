"""One test per guardrail rule, plus what passes them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nm_toolkit.config import GuardrailSettings
from nm_toolkit.schemas import Acl, PlaceAdapter, QosQueue, RateLimit, Reservation, ScaleCompute
from policies.guardrails import Guardrails
from tests.test_policy_helpers import NOW


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guardrails(clock: FakeClock | None = None, **settings: object) -> Guardrails:
    caps = {"cell-1": 100.0, "link-a": 40.0}
    return Guardrails(GuardrailSettings(**settings), caps.__getitem__, clock or FakeClock())  # type: ignore[arg-type]


def acl(key: str, action: str = "deny", priority: int = 100, **match: str | int) -> Acl:
    return Acl(idempotency_key=key, policy="t", target="cell-1", reason="test", action=action,
               match=match, priority=priority, created_at=NOW)


def reservation(key: str, bandwidth: float, target: str = "cell-1", priority: int = 100) -> Reservation:
    return Reservation(idempotency_key=key, policy="t", target=target, reason="test", bandwidth=bandwidth,
                       capacity=100.0, forecast_peak=bandwidth, priority=priority, created_at=NOW)


def rules(report) -> dict[str, str]:  # noqa: ANN001
    return {r.decision.idempotency_key: r.rule for r in report.rejected}


def test_reservation_above_link_capacity_is_rejected() -> None:
    report = guardrails().check([reservation("ok", 90.0), reservation("big", 50.0, target="link-a")])
    assert [d.idempotency_key for d in report.accepted] == ["ok"]
    assert rules(report) == {"big": "capacity"}
    assert "exceeds the capacity 40" in report.rejected[0].reason


@pytest.mark.parametrize("match", [{}, {"eth_type": 0x0800}, {"ipv4_src": "0.0.0.0/0"}])
def test_deny_rule_that_blocks_all_traffic_is_rejected(match: dict) -> None:
    report = guardrails().check([acl("all", **match)])
    assert rules(report) == {"all": "block_all"}


@pytest.mark.parametrize("match", [{"tcp_dst": 6653}, {"ip_proto": 6}, {"ipv4_dst": "127.0.0.0/8"},
                                   {"ipv4_src": "127.0.0.1", "tcp_src": 6653}])
def test_deny_rule_that_can_hit_the_controller_channel_is_rejected(match: dict) -> None:
    report = guardrails().check([acl("ctl", **match)])
    assert rules(report) == {"ctl": "controller"}


@pytest.mark.parametrize("match", [{"tcp_dst": 22}, {"ipv4_src": "10.9.0.0/16"}, {"udp_dst": 6653},
                                   {"ipv4_dst": "10.0.0.0/8", "ip_proto": 6}])
def test_narrow_deny_rules_away_from_the_controller_pass(match: dict) -> None:
    report = guardrails().check([acl("narrow", **match)])
    assert [d.idempotency_key for d in report.accepted] == ["narrow"] and not report.rejected


def test_allow_rules_are_never_block_all() -> None:
    assert guardrails().check([acl("open", action="allow")]).accepted


def test_maximum_rate_of_changes_admits_higher_priorities_first_and_refills_after_a_minute() -> None:
    clock = FakeClock()
    rails = guardrails(clock, max_changes_per_minute=3)
    batch = [acl(f"k{i}", priority=i, tcp_dst=1000 + i) for i in range(5)]
    report = rails.check(batch)
    assert sorted(d.idempotency_key for d in report.accepted) == ["k2", "k3", "k4"]
    assert rules(report) == {"k0": "rate", "k1": "rate"}
    # refreshes of what is in force, and dry runs, are not changes
    applied = {d.idempotency_key: d for d in report.accepted}
    again = [d.model_copy(update={"id": "new"}) for d in report.accepted]
    dry = acl("dry", tcp_dst=9).model_copy(update={"dry_run": True})
    assert len(rails.check([*again, dry], applied).accepted) == 4
    assert rules(rails.check([acl("k9", tcp_dst=9)])) == {"k9": "rate"}
    clock.now += 61
    assert rails.check([acl("k9", tcp_dst=9)]).accepted


def test_conflicts_are_resolved_by_priority_and_reported() -> None:
    low = acl("allow-ssh", action="allow", priority=100, tcp_dst=22)
    high = acl("deny-ssh", action="deny", priority=200, tcp_dst=22)
    report = guardrails().check([low, high])
    assert [d.idempotency_key for d in report.accepted] == ["deny-ssh"]
    assert rules(report) == {"allow-ssh": "conflict"}
    (conflict,) = report.conflicts
    assert conflict.winner is high and conflict.loser is low and "200 beats 100" in conflict.reason


def test_a_new_decision_supersedes_an_applied_lower_priority_one() -> None:
    applied = reservation("old", 50.0, priority=100)
    newer = reservation("new", 60.0, priority=150)
    report = guardrails().check([newer], {"old": applied})
    assert report.accepted == [newer] and report.superseded == [applied]
    # ...but not an applied higher-priority one
    weaker = RateLimit(idempotency_key="cap", policy="t", target="cell-1", reason="t", rate_kbps=10,
                       priority=50, created_at=NOW + timedelta(seconds=1))
    report = guardrails().check([weaker], {"old": applied})
    assert not report.accepted and rules(report) == {"cap": "conflict"}


def test_an_equal_decision_never_displaces_the_one_in_force_round_after_round() -> None:
    """Two identical intents make two equal-priority decisions for one slot every round: the one
    the switch carries out stays, whatever order or age the fresh copies arrive in."""
    in_force = acl("first", tcp_dst=22).model_copy(update={"intent_id": "op-1"})
    applied = {"first": in_force}
    rails = guardrails(max_changes_per_minute=1000)
    for round_ in range(1, 11):
        at = NOW + timedelta(minutes=round_)
        refresh = in_force.model_copy(update={"created_at": at})
        duplicate = acl("second", tcp_dst=22).model_copy(update={"created_at": at + timedelta(seconds=1), "intent_id": "op-2"})
        for batch in ([refresh, duplicate], [duplicate, refresh]):
            report = rails.check(batch, applied)
            assert report.accepted == [refresh]
            assert report.superseded == [] and rules(report) == {"second": "conflict"}
    # A policy's newer decision for its own slot revises the one in force (a new replica count).
    scale = ScaleCompute(idempotency_key="scale:3", policy="edge_autoscale", target="edge-0", replicas=3, reason="t", created_at=NOW)
    revised = scale.model_copy(update={"id": "revised", "idempotency_key": "scale:5", "replicas": 5, "created_at": NOW + timedelta(minutes=1)})
    report = rails.check([revised], {"scale:3": scale})
    assert report.accepted == [revised] and report.superseded == [scale]
    # Between two decisions neither of which is in force, the newer still wins.
    report = rails.check([acl("a", tcp_dst=22), acl("b", tcp_dst=22).model_copy(update={"created_at": NOW + timedelta(seconds=1)})])
    assert [d.idempotency_key for d in report.accepted] == ["b"]


def test_an_intent_may_only_touch_its_own_tenants_targets() -> None:
    rails = guardrails(tenants={"acme": ["cell-1"], "globex": ["cell-2"]})
    mine = QosQueue(idempotency_key="a", policy="t", target="cell-1", reason="t", queue_id=2,
                    match={"udp_dst": 5060}, tenant="acme")
    theirs = mine.model_copy(update={"idempotency_key": "b", "target": "cell-2"})
    stranger = mine.model_copy(update={"idempotency_key": "c", "tenant": "initech"})
    untenanted = PlaceAdapter(idempotency_key="d", policy="t", target="edge-x", reason="t", adapter="lora")
    report = rails.check([mine, theirs, stranger, untenanted])
    assert [d.idempotency_key for d in report.accepted] == ["a", "d"]
    assert rules(report) == {"b": "tenant", "c": "tenant"}


def test_an_llm_decision_for_a_target_no_service_answers_to_is_rejected_and_counted() -> None:
    """``actuator``: a scale_compute or place_adapter aimed at a cell (no edge service or supervisor
    answers to one) is rejected with the fix; the same at a declared site or the cloud passes, and
    the decision service counts what went without an actuator."""
    from nm_toolkit.config import Settings
    from nm_toolkit.controller.service import DecisionController
    from policies.guardrails import llm_actuators

    settings = Settings.model_validate({"policy": {"sites": {"edge-north": ["cell-00*"]}}})
    assert llm_actuators(settings)["scale_compute"] == {"edge-north", "cloud"}

    def scale(key: str, target: str) -> ScaleCompute:
        return ScaleCompute(idempotency_key=key, policy="t", target=target, reason="test", replicas=2, created_at=NOW)

    place = PlaceAdapter(idempotency_key="p", policy="t", target="cell-0001", reason="test", adapter="completion", created_at=NOW)
    decisions = [scale("edge", "edge-north"), scale("cloud", "cloud"), scale("cell", "cell-0001"), place]
    report = Guardrails(GuardrailSettings(), lambda _: 1.0, actuators=llm_actuators(settings)).check(decisions)
    assert rules(report) == {"cell": "actuator", "p": "actuator"}
    assert "declare the site that serves it under policy.sites" in report.rejected[0].reason
    assert DecisionController(settings, [], []).apply(decisions).without_actuator == 2
    assert Settings().policy.sites == {Settings().llm.edge_site: ["*"]}  # undeclared: the edge site serves every cell
