"""End to end against a real Open vSwitch: telemetry -> collector -> forecast -> policies ->
guardrails -> os-ken -> flows and meters on the bridge; TTL expiry removes them; a switch that
restarts and reconnects gets them back."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from collectors.publish import publish_records
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.config import ControllerSettings, Settings
from nm_toolkit.controller.engine import OpenFlowEngine
from nm_toolkit.controller.service import DecisionController
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.pipeline import ClosedLoop
from nm_toolkit.schemas import Acl, RateLimit
from policies.bandwidth import BandwidthReservationPolicy
from policies.intent_qos_acl import IntentQosAclPolicy
from policies.intents import NetworkIntent

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)"),
]
BRIDGE = "br-nmt"
TARGETS = {"cell-0000": {"ipv4_dst": "10.0.0.0/24"}, "cell-0001": {"ipv4_dst": "10.0.1.0/24"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def engine() -> OpenFlowEngine:
    from nm_toolkit.controller.runtime import start_openflow_controller

    settings = ControllerSettings(listen_port=free_port(), targets=TARGETS, expiry_interval_seconds=0.2)
    return start_openflow_controller(settings)


@pytest.fixture(scope="module")
def ovs(engine: OpenFlowEngine) -> Iterator[OpenVSwitch]:
    with OpenVSwitch() as switch:
        switch.add_bridge(BRIDGE, controller=f"tcp:127.0.0.1:{engine.settings.listen_port}", datapath_id=1)
        assert engine.wait_for_switches(1, 30), "the bridge never connected to the os-ken app"
        yield switch


def reservation_flows(ovs: OpenVSwitch) -> list[str]:
    return [f for f in ovs.dump_flows(BRIDGE) if "nw_dst=10.0.0.0/24" in f]


def test_telemetry_to_flows_and_meters_then_reconnect_then_ttl_expiry(engine: OpenFlowEngine, ovs: OpenVSwitch) -> None:
    # telemetry for two cells, three days hourly, into the collector over the bus
    telemetry = SyntheticTelemetry(n_sources=2, periods=72, metric="throughput_mbps", unit="Mbit/s",
                                   missing_probability=0.0, burst_probability=0.0, seed=3)
    frame = telemetry.frame()
    settings = Settings(policy={"decision_ttl_seconds": 12.0})
    bus = EmbeddedBus()
    bus.create_topics([settings.topics.telemetry])
    producer = bus.producer()
    publish_records(producer, settings.topics.telemetry, telemetry.records())
    producer.flush()
    # cell-0000 runs near its capacity, cell-0001 has plenty: only cell-0000 gets a reservation
    capacities = {"cell-0000": float(frame["cell-0000"].max()) * 1.05, "cell-0001": 1e6}
    loop = ClosedLoop(bus, settings, policies=[], capacities=capacities)
    loop.collect(idle_s=0.2, close_windows=True)
    forecasts, skipped = loop.forecast()
    loop.close()
    assert {f.series_id for f in forecasts} == {"cell-0000|throughput_mbps", "cell-0001|throughput_mbps"}, skipped

    intent = NetworkIntent(id="no-telnet", tenant="ops", target="cell-0001", action="block",
                           traffic={"protocol": "tcp", "port": 23, "dst": "10.0.1.0/24"}, priority=500)
    settings.controller.guardrails.tenants = {"ops": ["cell-0001"]}
    controller = DecisionController(settings, [BandwidthReservationPolicy(), IntentQosAclPolicy()], [engine], capacities)
    report = controller.decide(forecasts, intents=[intent])
    assert report.summary()["openflow_applied"] == 2, report
    (reservation,) = [d for d in report.guardrails.accepted if d.kind == "reservation"]
    assert reservation.target == "cell-0000"
    assert engine.flush(10)

    expected_meter = f"rate={int(-(-reservation.bandwidth * 1000 // 1))}"
    (flow,) = reservation_flows(ovs)
    assert "actions=meter:1,set_queue:1,NORMAL" in flow and "priority=1100" in flow
    assert expected_meter in ovs.dump_meters(BRIDGE)[1] and "type=drop" in ovs.dump_meters(BRIDGE)[1]
    assert any("tp_dst=23" in f and "nw_dst=10.0.1.0/24" in f and "actions=drop" in f for f in ovs.dump_flows(BRIDGE))
    assert not engine.errors

    # the switch dies and comes back empty; the controller re-installs the desired state
    ovs.stop_vswitchd()
    wait_until(lambda: not engine.datapath_ids, 15, "the controller to notice the switch is gone")
    ovs.start_vswitchd()
    assert engine.wait_for_switches(1, 30)
    wait_until(lambda: bool(reservation_flows(ovs)) and 1 in ovs.dump_meters(BRIDGE), 15, "state to be re-installed")
    assert expected_meter in ovs.dump_meters(BRIDGE)[1]
    assert any("tp_dst=23" in f for f in ovs.dump_flows(BRIDGE))

    # the reservation's TTL runs out: its flow and meter go, the intent's ACL (1 h TTL) stays
    wait_until(lambda: not reservation_flows(ovs), 30, "the reservation to expire")
    assert ovs.dump_meters(BRIDGE) == {}
    assert any("tp_dst=23" in f for f in ovs.dump_flows(BRIDGE))
    assert reservation.idempotency_key not in controller.in_force
    assert "intent_qos_acl:ops:no-telnet" in controller.in_force


def test_reconnect_reconciles_stale_flows_and_dry_runs_touch_nothing(engine: OpenFlowEngine, ovs: OpenVSwitch) -> None:
    ssh = Acl(idempotency_key="deny-ssh", policy="test", target="cell-0000", reason="test", action="deny",
              match={"tcp_dst": 22, "ipv4_src": "192.0.2.0/24"})
    dry = RateLimit(idempotency_key="dry-cap", policy="test", target="cell-0000", reason="test",
                    rate_kbps=500, dry_run=True)
    outcomes = engine.apply([ssh, dry])
    assert [o.status for o in outcomes] == ["applied", "dry_run"]
    assert engine.flush(10)
    assert any("nw_src=192.0.2.0/24" in f for f in ovs.dump_flows(BRIDGE))
    assert all("rate=500" not in m for m in ovs.dump_meters(BRIDGE).values())
    # applying the same decision again is a no-op, not a duplicate
    assert [o.status for o in engine.apply([ssh])] == ["unchanged"]

    # the controller becomes unreachable; meanwhile the decision is withdrawn; the switch keeps
    # the flow (fail-secure), and reconciliation on reconnect removes it
    ovs.set_controller(BRIDGE, "tcp:127.0.0.1:1")
    wait_until(lambda: not engine.datapath_ids, 15, "the controller to notice the channel is gone")
    assert engine.withdraw(["deny-ssh"]) == ["deny-ssh"]
    assert any("nw_src=192.0.2.0/24" in f for f in ovs.dump_flows(BRIDGE))
    ovs.set_controller(BRIDGE, f"tcp:127.0.0.1:{engine.settings.listen_port}")
    assert engine.wait_for_switches(1, 30)
    wait_until(lambda: not any("nw_src=192.0.2.0/24" in f for f in ovs.dump_flows(BRIDGE)), 15, "reconciliation")
    assert "priority=0 actions=NORMAL" in ovs.dump_flows(BRIDGE)
