"""End to end against a real Open vSwitch: telemetry -> collector -> forecast -> policies ->
guardrails -> os-ken -> flows, meters and port queues (OVSDB) on the bridge; TTL expiry removes
them; a switch that restarts and reconnects gets them back; re-applying what is in force leaves
the flow table untouched."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from collectors.publish import publish_records
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.config import ControllerSettings, Settings
from nm_toolkit.controller.engine import OpenFlowEngine
from nm_toolkit.controller.service import DecisionController
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.pipeline import ClosedLoop
from nm_toolkit.schemas import Acl, QosQueue, RateLimit
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


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, report: Callable[[], str] = str) -> None:
    """Wait for ``condition``; on timeout fail saying what was awaited, and ``report()`` (a log)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{report()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def switch() -> Iterator[OpenVSwitch]:
    with OpenVSwitch() as ovs:
        yield ovs


@pytest.fixture(scope="module")
def engine(switch: OpenVSwitch) -> OpenFlowEngine:
    from nm_toolkit.controller.runtime import start_openflow_controller

    settings = ControllerSettings(
        listen_port=free_port(), targets=TARGETS, expiry_interval_seconds=0.2, queues={"ovsdb": f"unix:{switch.db_socket}"},
    )
    return start_openflow_controller(settings)


@pytest.fixture(scope="module")
def ovs(switch: OpenVSwitch, engine: OpenFlowEngine) -> OpenVSwitch:
    switch.add_bridge(BRIDGE, controller=f"tcp:127.0.0.1:{engine.settings.listen_port}", ports=2, datapath_id=1)
    assert engine.wait_for_switches(1, 30), "the bridge never connected to the os-ken app"
    return switch


def reservation_flows(ovs: OpenVSwitch) -> list[str]:
    return [f for f in ovs.dump_flows(BRIDGE) if "nw_dst=10.0.0.0/24" in f]


def flow_counters(ovs: OpenVSwitch, needle: str) -> tuple[str, int, float]:
    """(cookie, n_packets, duration in s) of the one flow whose line contains ``needle``."""
    (line,) = [f for f in ovs.ofctl("dump-flows", BRIDGE).splitlines() if needle in f]
    fields = dict(part.split("=", 1) for part in line.replace(",", " ").split() if "=" in part)
    return fields["cookie"], int(fields["n_packets"]), float(fields["duration"].rstrip("s"))


def send_packets(ovs: OpenVSwitch, dst: str, count: int, size: int = 200) -> None:
    """``count`` UDP packets of ``size`` bytes to ``dst``, sent back to back by the kernel out of
    port 1's tap device, so they enter the bridge on port 1 (needs root, as the bridge does)."""
    ethernet = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytes.fromhex("4500") + (size - 14).to_bytes(2, "big") + bytes.fromhex("0000 0000 4011 0000")
    ip += bytes([10, 0, 9, 9]) + bytes(int(octet) for octet in dst.split("."))
    udp = (5000).to_bytes(2, "big") + (5001).to_bytes(2, "big") + (size - 34).to_bytes(2, "big") + bytes(2)
    frame = ethernet + ip + udp
    frame += bytes(size - len(frame))
    for port in (f"{BRIDGE}-p1", f"{BRIDGE}-p2"):
        ovs.link_up(port)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((f"{BRIDGE}-p1", 0))
        for _ in range(count):
            raw.send(frame)


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

    # the reservation is a guarantee: its own queue (min-rate its bandwidth, max-rate the link's
    # capacity) on every port, created in OVSDB before the flow that names it
    min_rate = str(int(-(-reservation.bandwidth * 1000 // 1)) * 1000)
    max_rate = str(int(-(-reservation.capacity * 1000 // 1)) * 1000)
    (flow,) = reservation_flows(ovs)
    assert "actions=set_queue:8,NORMAL" in flow and "priority=1100" in flow
    assert ovs.dump_meters(BRIDGE) == {}
    for port in (f"{BRIDGE}-p1", f"{BRIDGE}-p2"):
        queues = ovs.qos_show(port)  # what ovs-vswitchd applied to the port
        assert set(queues) == {0, 8}, queues
        assert queues[8]["min-rate"] == min_rate and queues[8]["max-rate"] == max_rate
    assert len(ovs.rows("QoS")) == 1 and len(ovs.rows("Queue")) == 2
    assert any("tp_dst=23" in f and "nw_dst=10.0.1.0/24" in f and "actions=drop" in f for f in ovs.dump_flows(BRIDGE))
    assert not engine.errors

    # the switch dies and comes back empty; the controller re-installs the desired state
    ovs.stop_vswitchd()
    wait_until(lambda: not engine.datapath_ids, 15, "the controller to notice the switch is gone")
    ovs.start_vswitchd()
    assert engine.wait_for_switches(1, 30)
    wait_until(lambda: bool(reservation_flows(ovs)), 15, "state to be re-installed")
    assert "set_queue:8" in reservation_flows(ovs)[0] and set(ovs.qos_show(f"{BRIDGE}-p1")) == {0, 8}
    assert any("tp_dst=23" in f for f in ovs.dump_flows(BRIDGE))

    # the reservation's TTL runs out: its flow goes, then its queue rows; the ACL (1 h TTL) stays
    wait_until(lambda: not reservation_flows(ovs), 30, "the reservation to expire")
    wait_until(lambda: not ovs.rows("Queue"), 15, "the reservation's queue rows to go")
    assert ovs.rows("QoS") == [] and ovs.qos_show(f"{BRIDGE}-p1") == {}
    assert ovs.vsctl("get", "port", f"{BRIDGE}-p1", "qos").strip() == "[]"
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


CAP_FLOW = "nw_dst=10.0.1.0/24 actions=meter:"  # the cap's flow (the no-telnet ACL shares the subnet)


def cap(rate_kbps: float, created_at: datetime | None = None) -> RateLimit:
    return RateLimit(idempotency_key="cap-cell-0001", policy="test", target="cell-0001", reason="test",
                     rate_kbps=rate_kbps, created_at=created_at or datetime.now(UTC), ttl_seconds=600)


def test_reapplying_what_is_in_force_leaves_the_flow_untouched(engine: OpenFlowEngine, ovs: OpenVSwitch) -> None:
    """Ten rounds re-issue the same cap: its flow keeps its cookie, its age and packet counters
    that keep growing, and its meter stays. A new rate modifies the meter in place."""
    assert [o.status for o in engine.apply([cap(640)])] == ["applied"]
    assert engine.flush(10)
    send_packets(ovs, "10.0.1.7", 3)
    wait_until(lambda: flow_counters(ovs, CAP_FLOW)[1] == 3, 15, "three packets on the cap's flow")
    cookie, _, age = flow_counters(ovs, CAP_FLOW)
    for round_ in range(1, 11):
        assert [o.status for o in engine.apply([cap(640)])] == ["unchanged"]  # a fresh copy each round
        assert engine.flush(10)
        send_packets(ovs, "10.0.1.7", 1)
        wait_until(lambda r=round_: flow_counters(ovs, CAP_FLOW)[1] == 3 + r, 15, f"round {round_}'s packet")
        same_cookie, _, later_age = flow_counters(ovs, CAP_FLOW)
        assert same_cookie == cookie and later_age >= age  # the same flow, never replaced
    meter_id = engine.state.get("cap-cell-0001").plan.meter.meter_id
    assert "rate=640" in ovs.dump_meters(BRIDGE)[meter_id]

    assert [o.status for o in engine.apply([cap(1280)])] == ["applied"]
    assert engine.flush(10)
    assert "rate=1280" in ovs.dump_meters(BRIDGE)[meter_id]
    assert flow_counters(ovs, CAP_FLOW)[:2] == (cookie, 13)  # revised in place
    assert engine.withdraw(["cap-cell-0001"]) == ["cap-cell-0001"]
    assert engine.flush(10)
    assert not any(CAP_FLOW in f for f in ovs.dump_flows(BRIDGE)) and meter_id not in ovs.dump_meters(BRIDGE)
    assert not engine.errors


def test_class_queues_exist_and_the_userspace_datapath_enforces_meters_not_queues(
    engine: OpenFlowEngine, ovs: OpenVSwitch
) -> None:
    """A QoS class's queue is created with the class's settings. On the userspace datapath the
    meter polices (its band drops what exceeds the rate) while the queue, though configured on
    the port, sees no packet: the datapath writes past the port's qdisc."""
    video = QosQueue(idempotency_key="video-high", policy="test", target="cell-0000", reason="test", queue_id=2,
                     match={"ipv4_dst": "10.0.0.0/24", "udp_dst": 5001}, ttl_seconds=600)
    assert [o.status for o in engine.apply([video, cap(64)])] == ["applied", "applied"]
    assert engine.flush(10)
    (flow,) = [f for f in ovs.dump_flows(BRIDGE) if "tp_dst=5001" in f]
    assert "actions=set_queue:2,NORMAL" in flow
    applied = ovs.qos_show(f"{BRIDGE}-p2")
    assert set(applied) == {0, 2} and applied[2]["priority"] == "1"  # the default class settings

    send_packets(ovs, "10.0.0.5", 50, size=1000)  # into the class queue, out of port 2
    send_packets(ovs, "10.0.1.5", 200, size=1000)  # 1.6 Mbit back to back through a 64 kbit/s meter
    wait_until(lambda: flow_counters(ovs, "tp_dst=5001")[1] == 50, 15, "the queued flow's packets")
    meter_id = engine.state.get("cap-cell-0001").plan.meter.meter_id
    stats = ovs.ofctl("meter-stats", BRIDGE, f"meter={meter_id}")
    dropped = int(stats.split("packet_count:")[-1].split()[0].rstrip(","))  # the band's count: dropped
    assert 0 < dropped < 200, stats
    port_stats = ovs.ofctl("dump-ports", BRIDGE, "2")
    sent = int(port_stats.split("tx pkts=")[1].split(",")[0])
    assert sent >= 50, port_stats  # the queued packets did leave by port 2 ...
    queue_stats = ovs.ofctl("queue-stats", BRIDGE, "2", "2")
    assert "port 2 queue 2: bytes=0, pkts=0" in queue_stats, queue_stats  # ... but not through its queue

    assert sorted(engine.withdraw(["video-high", "cap-cell-0001"])) == ["cap-cell-0001", "video-high"]
    wait_until(lambda: not ovs.rows("Queue"), 15, "the class queue to go with its last flow")
