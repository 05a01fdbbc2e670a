"""Every piece of OpenFlow 1.3 encoding in the toolkit: decisions become flow plans (pure data),
flow plans become os-ken flow-mod, meter-mod and barrier messages.

Keeping the wire format in one module means the os-ken app stays a handful of small event
handlers, and the mapping from a decision to switch state can be read (and tested) in one place.

Mapping (table 0; the controller owns the bridge, which runs in fail-secure mode):

* ``RateLimit``   -> meter (DROP band at ``rate_kbps``) + flow ``meter:N, NORMAL``: a cap,
  policed on every datapath.
* ``Reservation`` -> a port queue of its own (min-rate the reserved bandwidth: a guarantee;
  max-rate its link's capacity, so it borrows what is spare) + flow ``set_queue:Q, NORMAL``.
  The guardrails keep the reservations on a link within its capacity, so the guarantees fit.
* ``QosQueue``    -> the class's port queue (``controller.queues.classes``) + flow
  ``set_queue:Q, NORMAL``
* ``Acl``         -> flow ``NORMAL`` (allow) or a flow with no instructions (deny: drop)
* ``Reroute``     -> flow ``output:P`` where P is the port towards the path's next hop
* ``ScaleCompute`` / ``PlaceAdapter`` are not switch state: :func:`compile_decision` says so.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nm_toolkit.config import QueueSettings
from nm_toolkit.schemas import Acl, Decision, QosQueue, RateLimit, Reroute, Reservation

BASE_PRIORITY = 1000  # decisions sit above the priority-0 NORMAL flow and below 65535
MAX_HARD_TIMEOUT = 65535

Match = Mapping[str, str | int]

_INT_FIELDS = {"in_port", "eth_type", "ip_proto", "tcp_src", "tcp_dst", "udp_src", "udp_dst", "ip_dscp", "vlan_vid"}
_IPV4_FIELDS = {"ipv4_src", "ipv4_dst"}
_MAC_FIELDS = {"eth_src", "eth_dst"}
MATCH_FIELDS = _INT_FIELDS | _IPV4_FIELDS | _MAC_FIELDS
_L4_PROTO = {"tcp_src": 6, "tcp_dst": 6, "udp_src": 17, "udp_dst": 17}
ETH_IPV4 = 0x0800


class UnsupportedDecision(ValueError):
    """The decision cannot become switch state here (unknown target, unknown field, ...)."""


@dataclass(frozen=True)
class MeterPlan:
    meter_id: int
    rate_kbps: int
    burst_kb: int = 0


@dataclass(frozen=True)
class QueuePlan:
    """A port queue that a flow's ``set_queue`` names. It lives in OVSDB, not in OpenFlow
    (:mod:`nm_toolkit.controller.ovsdb` keeps it there): min-rate a guarantee, max-rate a cap."""

    queue_id: int
    min_kbps: int | None = None
    max_kbps: int | None = None
    priority: int | None = None


@dataclass(frozen=True)
class FlowPlan:
    """What one decision puts on a switch: at most one meter, at most one queue, one flow."""

    cookie: int
    priority: int
    match: tuple[tuple[str, Any], ...]
    action: Literal["normal", "drop", "output"]
    meter: MeterPlan | None = None
    queue: QueuePlan | None = None
    out_port: int | None = None

    @property
    def queue_id(self) -> int | None:
        return None if self.queue is None else self.queue.queue_id


def cookie_for(idempotency_key: str) -> int:
    """A stable 64-bit cookie per idempotency key, so flows can be found and deleted by key."""
    return int.from_bytes(hashlib.blake2b(idempotency_key.encode(), digest_size=8).digest(), "big") or 1


def normalize_match(match: Match) -> tuple[tuple[str, Any], ...]:
    """Validate field names and add OpenFlow prerequisites (eth_type for IPv4 fields, ip_proto
    for L4 ports); prefixes such as ``10.0.0.0/24`` become (address, mask) pairs."""
    fields: dict[str, Any] = {}
    for name, value in match.items():
        if name not in MATCH_FIELDS:
            raise UnsupportedDecision(f"match field {name!r} is not supported; use one of {sorted(MATCH_FIELDS)}")
        if name in _INT_FIELDS:
            fields[name] = int(value, 0) if isinstance(value, str) else int(value)
        elif name in _IPV4_FIELDS:
            net = ipaddress.IPv4Network(str(value), strict=False)
            fields[name] = str(net.network_address) if net.prefixlen == 32 else (str(net.network_address), str(net.netmask))
        else:
            fields[name] = str(value).lower()
    if any(name in _IPV4_FIELDS or name in _L4_PROTO or name in {"ip_proto", "ip_dscp"} for name in fields):
        if fields.setdefault("eth_type", ETH_IPV4) != ETH_IPV4:
            raise UnsupportedDecision("IPv4 match fields need eth_type 0x0800")
    for name, proto in _L4_PROTO.items():
        if name in fields and fields.setdefault("ip_proto", proto) != proto:
            raise UnsupportedDecision(f"{name} needs ip_proto {proto}")
    return tuple(sorted(fields.items()))


def compile_decision(
    decision: Decision,
    *,
    meter_id: int | None,
    target_matches: Mapping[str, Match],
    bandwidth_unit_kbps: float,
    queue_id: int | None,
    queues: QueueSettings,
    next_hop_ports: Mapping[str, int],
) -> FlowPlan:
    """The switch state of ``decision``; raises :class:`UnsupportedDecision` when it has none.
    ``meter_id`` and ``queue_id`` are the ids allocated to a rate limit's meter and a
    reservation's queue."""
    cookie = cookie_for(decision.idempotency_key)
    priority = min(65535, BASE_PRIORITY + decision.priority)

    def target_match() -> tuple[tuple[str, Any], ...]:
        if decision.target not in target_matches:
            raise UnsupportedDecision(
                f"target {decision.target!r} has no match; add it under controller.targets in nmt.toml"
            )
        return normalize_match(target_matches[decision.target])

    def meter(rate_kbps: float, burst_kb: float | None = None) -> MeterPlan:
        if meter_id is None:
            raise UnsupportedDecision("a metered decision needs a meter id")
        return MeterPlan(meter_id, max(1, math.ceil(rate_kbps)), math.ceil(burst_kb or 0))

    def class_queue(queue: int) -> QueuePlan:
        if queue >= queues.first_reservation_queue:
            raise UnsupportedDecision(
                f"queue {queue} is in the reservations' range; QoS classes use queues below "
                f"controller.queues.first_reservation_queue ({queues.first_reservation_queue})"
            )
        spec = queues.classes.get(queue)
        if spec is None:
            return QueuePlan(queue)
        return QueuePlan(queue, _kbps(spec.min_kbps), _kbps(spec.max_kbps), spec.priority)

    match decision:
        case RateLimit():
            return FlowPlan(cookie, priority, target_match(), "normal", meter(decision.rate_kbps, decision.burst_kb))
        case Reservation():
            if queue_id is None:
                raise UnsupportedDecision("a reservation needs a queue id")
            guarantee = QueuePlan(
                queue_id, _kbps(decision.bandwidth * bandwidth_unit_kbps), _kbps(decision.capacity * bandwidth_unit_kbps)
            )
            return FlowPlan(cookie, priority, target_match(), "normal", queue=guarantee)
        case QosQueue():
            return FlowPlan(cookie, priority, normalize_match(decision.match), "normal", queue=class_queue(decision.queue_id))
        case Acl():
            action: Literal["normal", "drop"] = "normal" if decision.action == "allow" else "drop"
            return FlowPlan(cookie, priority, normalize_match(decision.match), action)
        case Reroute():
            hop = f"{decision.path[0]}>{decision.path[1]}"
            if hop not in next_hop_ports:
                raise UnsupportedDecision(f"no port for hop {hop}; add it under controller.next_hop_ports")
            return FlowPlan(cookie, priority, normalize_match(decision.match), "output", out_port=next_hop_ports[hop])
    raise UnsupportedDecision(f"{decision.kind} decisions are not switch state; send them to the decisions topic")


def _kbps(rate: float | None) -> int | None:
    """A whole kbit/s rate, rounded up; none for no rate or zero."""
    return math.ceil(rate) if rate else None


def needs_meter(decision: Decision) -> bool:
    return isinstance(decision, RateLimit)


def needs_queue(decision: Decision) -> bool:
    """Whether the decision gets a queue id of its own (a class queue's id is the decision's)."""
    return isinstance(decision, Reservation)


# --- os-ken wire messages ------------------------------------------------------------------------
MeterCommand = Literal["add", "modify", "keep"]


def install_messages(
    datapath: Any, plan: FlowPlan, hard_timeout_s: float | None = None, meter: MeterCommand = "add"
) -> list[Any]:
    """Meter first (a flow that names a missing meter is rejected), then the flow. ``meter`` says
    whether the meter is new, on the switch at another rate, or on the switch as it is. The flow
    is an ADD: over a flow in the same slot it replaces the instructions in place and keeps its
    cookie and packet counters (OpenFlow 1.3 without OFPFF_RESET_COUNTS)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    messages: list[Any] = []
    if plan.meter is not None and meter != "keep":
        messages.append(meter_mod(datapath, plan.meter, ofp.OFPMC_ADD if meter == "add" else ofp.OFPMC_MODIFY))
    instructions: list[Any] = []  # a deny flow has none: matching packets are dropped
    if plan.action != "drop":
        if plan.meter is not None:
            instructions.append(parser.OFPInstructionMeter(plan.meter.meter_id))
        actions: list[Any] = [] if plan.queue_id is None else [parser.OFPActionSetQueue(plan.queue_id)]
        port = ofp.OFPP_NORMAL if plan.action == "normal" else plan.out_port
        actions.append(parser.OFPActionOutput(port))
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    hard = 0 if hard_timeout_s is None else min(MAX_HARD_TIMEOUT, max(1, math.ceil(hard_timeout_s)))
    messages.append(
        parser.OFPFlowMod(
            datapath, cookie=plan.cookie, command=ofp.OFPFC_ADD, hard_timeout=hard, priority=plan.priority,
            flags=ofp.OFPFF_SEND_FLOW_REM, match=parser.OFPMatch(**dict(plan.match)), instructions=instructions,
        )
    )
    return messages


def remove_messages(datapath: Any, plan: FlowPlan) -> list[Any]:
    """Delete the flow by its cookie, then its meter."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    messages: list[Any] = [
        parser.OFPFlowMod(
            datapath, cookie=plan.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch(),
        )
    ]
    if plan.meter is not None:
        messages.append(meter_delete(datapath, plan.meter.meter_id))
    return messages


def meter_delete(datapath: Any, meter_id: int) -> Any:
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPMeterMod(datapath, command=ofp.OFPMC_DELETE, meter_id=meter_id)


def reset_messages(datapath: Any) -> list[Any]:
    """Wipe every flow and meter, then restore plain L2 forwarding at priority 0: the start of
    a reconciliation to the desired state when a switch (re)connects."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return [
        parser.OFPFlowMod(
            datapath, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY, match=parser.OFPMatch(),
        ),
        parser.OFPMeterMod(datapath, command=ofp.OFPMC_DELETE, meter_id=ofp.OFPM_ALL),
        parser.OFPFlowMod(
            datapath, priority=0, match=parser.OFPMatch(),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(ofp.OFPP_NORMAL)])],
        ),
    ]


def meter_mod(datapath: Any, meter: MeterPlan, command: int) -> Any:
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    flags = ofp.OFPMF_KBPS | (ofp.OFPMF_BURST if meter.burst_kb else 0)
    band = parser.OFPMeterBandDrop(rate=meter.rate_kbps, burst_size=meter.burst_kb)
    return parser.OFPMeterMod(datapath, command=command, flags=flags, meter_id=meter.meter_id, bands=[band])


def barrier(datapath: Any) -> Any:
    return datapath.ofproto_parser.OFPBarrierRequest(datapath)


def echo_request(datapath: Any) -> Any:
    return datapath.ofproto_parser.OFPEchoRequest(datapath)
