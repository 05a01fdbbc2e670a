"""Congestion rerouting: a link forecast over its share of capacity moves its movable traffic onto
the declared alternative path, past the guardrails (the OpenFlow and ONOS adapters carry it out:
tests/test_controller_openflow.py, tests/test_controller_adapters.py)."""

from __future__ import annotations

from nm_toolkit.config import GuardrailSettings, PolicySettings
from nm_toolkit.schemas import Reroute
from policies.guardrails import Guardrails
from policies.registry import load_policies
from policies.reroute import CongestionReroutePolicy
from tests.test_policy_helpers import context, forecast


def test_a_link_forecast_over_capacity_is_rerouted_over_its_alternative_path() -> None:
    ctx = context(
        settings=PolicySettings(capacities={"s1-s2": 100.0, "s2-s3": 100.0}),
        forecasts={"s1-s2|mbps": forecast("s1-s2|mbps", [60.0, 95.0]), "s2-s3|mbps": forecast("s2-s3|mbps", [95.0]),
                   "s3-s4|mbps": forecast("s3-s4|mbps", [50.0])},  # fmt: skip
        targets={"s1-s2": {"ipv4_dst": "10.1.0.0/16"}},
    )
    policy = CongestionReroutePolicy(paths={"s1-s2": ["s1", "s3", "s2"], "s3-s4": ["s3", "s5", "s4"]}, share=0.9)
    (decision,) = policy.decide(ctx)  # s2-s3 has no alternative declared; s3-s4 is under its share
    assert isinstance(decision, Reroute) and decision.target == "s1-s2"
    assert decision.path == ["s1", "s3", "s2"] and decision.match == {"ipv4_dst": "10.1.0.0/16"}
    assert "95.0" in decision.reason
    assert Guardrails(GuardrailSettings(), lambda _: 100.0).check([decision]).accepted == [decision]
    assert CongestionReroutePolicy(paths={"s1-s2": ["s1", "s3", "s2"]}, share=0.99).decide(ctx) == []
    # found by name, as `controller.policy_params.congestion_reroute` configures it
    (loaded,) = load_policies(["congestion_reroute"], {"congestion_reroute": {"paths": {"s1-s2": ["s1", "s3", "s2"]}}})
    assert [d.target for d in loaded.decide(ctx)] == ["s1-s2"]
