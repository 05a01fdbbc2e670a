"""Decision -> flow plan -> OpenFlow 1.3 wire messages (os-ken's real encoder), the desired
state's slots, meter and queue ids and expiry, and the OVSDB transaction that keeps the queues."""

from __future__ import annotations

import os

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

import pytest  # noqa: E402
from os_ken.ofproto import ofproto_parser, ofproto_protocol, ofproto_v1_3  # noqa: E402

from nm_toolkit.config import QueueClass, QueueSettings  # noqa: E402
from nm_toolkit.controller import openflow  # noqa: E402
from nm_toolkit.controller.ovsdb import PortRow, QueueRow, Snapshot, sync_commands  # noqa: E402
from nm_toolkit.controller.state import DesiredState, Entry  # noqa: E402
from nm_toolkit.schemas import Acl, PlaceAdapter, QosQueue, RateLimit, Reroute, Reservation  # noqa: E402

COMMON = {"policy": "t", "reason": "t", "target": "cell-1"}
QUEUES = QueueSettings(classes={2: QueueClass(min_kbps=500, priority=1)}, first_reservation_queue=8)
ARGS = {"target_matches": {"cell-1": {"ipv4_dst": "10.0.1.0/24"}}, "bandwidth_unit_kbps": 1000.0,
        "queue_id": None, "queues": QUEUES, "next_hop_ports": {"s1>s2": 3}}


def test_match_gets_openflow_prerequisites_and_masks() -> None:
    assert openflow.normalize_match({"tcp_dst": 22, "ipv4_src": "10.9.0.0/16"}) == (
        ("eth_type", 0x0800), ("ip_proto", 6), ("ipv4_src", ("10.9.0.0", "255.255.0.0")), ("tcp_dst", 22),
    )
    assert openflow.normalize_match({"ipv4_dst": "10.0.0.1"}) == (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.1"))
    with pytest.raises(openflow.UnsupportedDecision, match="not supported"):
        openflow.normalize_match({"tcp_port": 22})
    with pytest.raises(openflow.UnsupportedDecision, match="needs ip_proto 17"):
        openflow.normalize_match({"udp_dst": 53, "ip_proto": 6})


def test_each_switch_decision_compiles_and_others_are_refused() -> None:
    limit = openflow.compile_decision(RateLimit(idempotency_key="l", rate_kbps=1500.5, **COMMON), meter_id=4, **ARGS)
    assert limit.meter == openflow.MeterPlan(4, 1501, 0) and limit.action == "normal" and limit.priority == 1100
    queue = openflow.compile_decision(
        QosQueue(idempotency_key="q", queue_id=2, match={"udp_dst": 5060}, priority=300, **COMMON), meter_id=None, **ARGS)
    assert queue.queue == openflow.QueuePlan(2, min_kbps=500, priority=1) and queue.meter is None and queue.priority == 1300
    with pytest.raises(openflow.UnsupportedDecision, match="reservations' range"):
        openflow.compile_decision(QosQueue(idempotency_key="q", queue_id=8, match={"udp_dst": 1}, **COMMON), meter_id=None, **ARGS)
    # a reservation is a guarantee (min-rate) up to its link's capacity (max-rate), not a meter
    reservation = openflow.compile_decision(
        Reservation(idempotency_key="r", bandwidth=2.5, capacity=10.0, forecast_peak=2.0, **COMMON),
        meter_id=None, **{**ARGS, "queue_id": 9})
    assert reservation.queue == openflow.QueuePlan(9, min_kbps=2500, max_kbps=10000) and reservation.meter is None
    deny = openflow.compile_decision(Acl(idempotency_key="a", action="deny", match={"tcp_dst": 23}, **COMMON), meter_id=None, **ARGS)
    assert deny.action == "drop" and deny.cookie == openflow.cookie_for("a")
    reroute = openflow.compile_decision(
        Reroute(idempotency_key="r", path=["s1", "s2", "s3"], match={"udp_dst": 5004}, **COMMON), meter_id=None, **ARGS)
    assert reroute.action == "output" and reroute.out_port == 3
    with pytest.raises(openflow.UnsupportedDecision, match="controller.targets"):
        openflow.compile_decision(RateLimit(idempotency_key="x", rate_kbps=1, **{**COMMON, "target": "cell-9"}), meter_id=1, **ARGS)
    with pytest.raises(openflow.UnsupportedDecision, match="decisions topic"):
        openflow.compile_decision(PlaceAdapter(idempotency_key="p", adapter="lora", **COMMON), meter_id=None, **ARGS)


def test_wire_messages_encode_and_decode_with_os_ken() -> None:
    datapath = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    plan = openflow.FlowPlan(cookie=42, priority=1100, match=openflow.normalize_match({"ipv4_dst": "10.0.1.0/24"}),
                             action="normal", meter=openflow.MeterPlan(5, 2000), queue=openflow.QueuePlan(1))
    meter_mod, flow_mod = openflow.install_messages(datapath, plan, hard_timeout_s=9.2)
    for xid, message in enumerate([meter_mod, flow_mod], start=1):
        message.set_xid(xid)
        message.serialize()
    decoded = ofproto_parser.msg(datapath, *ofproto_parser.header(flow_mod.buf), flow_mod.buf)
    assert decoded.cookie == 42 and decoded.hard_timeout == 10 and decoded.priority == 1100
    assert decoded.match["ipv4_dst"] == ("10.0.1.0", "255.255.255.0")
    meter_inst, apply_inst = decoded.instructions
    assert meter_inst.meter_id == 5
    assert [type(a).__name__ for a in apply_inst.actions] == ["OFPActionSetQueue", "OFPActionOutput"]
    assert meter_mod.bands[0].rate == 2000 and meter_mod.flags == ofproto_v1_3.OFPMF_KBPS
    only_flow = openflow.install_messages(datapath, plan, meter="keep")
    assert len(only_flow) == 1
    assert openflow.install_messages(datapath, plan, meter="modify")[0].command == ofproto_v1_3.OFPMC_MODIFY
    delete_flow, delete_meter = openflow.remove_messages(datapath, plan)
    assert delete_flow.command == ofproto_v1_3.OFPFC_DELETE and delete_flow.cookie_mask == 2**64 - 1
    assert delete_meter.meter_id == 5 and delete_meter.command == ofproto_v1_3.OFPMC_DELETE
    drop = openflow.install_messages(datapath, openflow.FlowPlan(1, 1100, (("tcp_dst", 23),), "drop"))[-1]
    assert drop.instructions == []


def entry(
    key: str, match: dict, priority: int = 100, expires_at: float = 100.0, meter_id: int | None = None, rate: int = 100,
    queue: openflow.QueuePlan | None = None,
) -> Entry:
    decision = Acl(idempotency_key=key, action="allow", match=match, priority=priority, **COMMON)
    meter = openflow.MeterPlan(meter_id, rate) if meter_id else None
    plan = openflow.FlowPlan(openflow.cookie_for(key), 1000 + priority, openflow.normalize_match(match), "normal", meter, queue)
    return Entry(decision, plan, expires_at)


def test_desired_state_slots_meter_ids_and_expiry() -> None:
    state = DesiredState()
    assert state.meter_id_for("a") == 1
    assert state.upsert(entry("a", {"tcp_dst": 1}, meter_id=1)).changed
    assert state.meter_id_for("b") == 2 and state.meter_id_for("a") == 1
    again = state.upsert(entry("a", {"tcp_dst": 1}, meter_id=1))
    assert not again.changed and again.replaced == [] and again.revised is None
    # a new rate in the same slot is a revision in place, not a removal
    revised = state.upsert(entry("a", {"tcp_dst": 1}, meter_id=1, rate=200))
    assert revised.changed and revised.replaced == [] and revised.revised is not None
    assert revised.revised.plan.meter == openflow.MeterPlan(1, 100)
    # another key for the same (match, priority) replaces it: OpenFlow would overwrite the flow
    takeover = state.upsert(entry("b", {"tcp_dst": 1}, expires_at=50.0))
    assert [e.key for e in takeover.replaced] == ["a"] and state.get("a") is None
    state.upsert(entry("c", {"tcp_dst": 2}, expires_at=200.0))
    assert [e.key for e in state.expire(60.0)] == ["b"] and len(state) == 1


def test_queue_ids_are_allocated_per_key_and_shared_by_class() -> None:
    state = DesiredState()
    assert state.queue_id_for("r1", first=8) == 8
    state.upsert(entry("r1", {"tcp_dst": 1}, queue=openflow.QueuePlan(8, min_kbps=1000)))
    state.upsert(entry("c1", {"tcp_dst": 2}, queue=openflow.QueuePlan(2)))
    state.upsert(entry("c2", {"tcp_dst": 3}, queue=openflow.QueuePlan(2)))
    assert state.queue_id_for("r1", first=8) == 8 and state.queue_id_for("r2", first=8) == 9
    assert state.queues() == {8: openflow.QueuePlan(8, min_kbps=1000), 2: openflow.QueuePlan(2)}


def test_ovsdb_transaction_creates_updates_and_removes_only_its_rows() -> None:
    settings = QueueSettings(port_max_kbps=100_000)
    ports = [PortRow("p1", "br-p1", None), PortRow("p2", "br-p2", None)]
    wanted = {8: openflow.QueuePlan(8, min_kbps=2500, max_kbps=10_000)}
    create = sync_commands(Snapshot(ports=list(ports)), wanted, settings)
    text = " ".join(create)
    # queue 0 (unmarked traffic) comes along; one QoS row on both ports, rates in bit/s
    assert 'create Queue other_config={"max-rate"="10000000", "min-rate"="2500000"}' in text
    assert "--id=@q0 create Queue other_config={}" in text
    assert "create QoS type=linux-htb queues={0=@q0, 8=@q8}" in text and 'other_config={"max-rate"="100000000"}' in text
    assert text.count("set Port") == 2 and "qos=@qos" in text
    # OVSDB holding exactly that: nothing to do
    held = Snapshot(
        ports=[PortRow("p1", "br-p1", "Q"), PortRow("p2", "br-p2", "Q")], qos="Q",
        qos_config=("linux-htb", {0: "u0", 8: "u8"}, {"max-rate": "100000000"}),
        queues={0: QueueRow("u0", 0, {}), 8: QueueRow("u8", 8, {"max-rate": "10000000", "min-rate": "2500000"})},
    )
    assert sync_commands(held, wanted, settings) == []
    # a new rate changes the row in place; another reservation adds its queue to the QoS row
    update = " ".join(sync_commands(held, {**wanted, 9: openflow.QueuePlan(9, min_kbps=1)}, settings))
    assert "create Queue" in update and "queues={0=u0, 8=u8, 9=@q9}" in update and "set Port" not in update
    # nothing wanted: the ports' QoS is cleared and every row this controller made destroyed
    gone = " ".join(sync_commands(held, {}, settings))
    assert gone.count("clear Port") == 2 and "destroy QoS Q" in gone
    assert "destroy Queue u0" in gone and "destroy Queue u8" in gone
