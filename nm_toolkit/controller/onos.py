"""ONOS northbound REST adapter: decisions become ONOS flows, meters and intents (JSON).

* RateLimit / Reservation / QosQueue / Acl -> ``POST /flows/{deviceId}`` on every configured
  device, after ``POST /meters/{deviceId}`` for metered ones (ONOS assigns the meter id and
  returns it in the ``Location`` header; the flow then names it). A reservation's or QoS
  class's flow names its queue (``QUEUE``); ONOS's REST API cannot create port queues, so they
  must exist on the devices (on Open vSwitch: the rows ``nm_toolkit.controller.ovsdb`` writes).
* Reroute -> ``POST /intents``: a PointToPointIntent from the first to the last connect point
  of the path (``device/port``), with the nodes in between as waypoints.

Every created resource's ``Location`` is remembered per decision, and TTL expiry or withdrawal
sends ``DELETE`` to each, so ONOS holds exactly the decisions in force.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from nm_toolkit.config import ControllerSettings
from nm_toolkit.controller.base import ControllerAdapter, Outcome, dry_run_outcome
from nm_toolkit.controller.openflow import FlowPlan, MeterPlan, normalize_match
from nm_toolkit.controller.state import DesiredState, Entry, plan_entry
from nm_toolkit.schemas import Decision, Reroute

APP_ID = "org.nmtoolkit.controller"
log = logging.getLogger(__name__)

_CRITERIA = {
    "in_port": ("IN_PORT", "port"), "eth_type": ("ETH_TYPE", "ethType"), "eth_src": ("ETH_SRC", "mac"),
    "eth_dst": ("ETH_DST", "mac"), "vlan_vid": ("VLAN_VID", "vlanId"), "ip_proto": ("IP_PROTO", "protocol"),
    "ipv4_src": ("IPV4_SRC", "ip"), "ipv4_dst": ("IPV4_DST", "ip"), "tcp_src": ("TCP_SRC", "tcpPort"),
    "tcp_dst": ("TCP_DST", "tcpPort"), "udp_src": ("UDP_SRC", "udpPort"), "udp_dst": ("UDP_DST", "udpPort"),
    "ip_dscp": ("IP_DSCP", "ipDscp"),
}


def onos_criteria(match: tuple[tuple[str, Any], ...]) -> list[dict[str, Any]]:
    """ONOS selector criteria of a normalized OpenFlow match."""
    criteria = []
    for name, value in match:
        kind, key = _CRITERIA[name]
        if isinstance(value, tuple):  # (address, netmask)
            value = f"{value[0]}/{sum(bin(int(octet)).count('1') for octet in value[1].split('.'))}"
        elif name == "eth_type":
            value = hex(value)
        elif name in ("ipv4_src", "ipv4_dst"):
            value = f"{value}/32"
        criteria.append({"type": kind, key: value})
    return criteria


def onos_flow(plan: FlowPlan, device_id: str, meter_id: str | None, ttl_seconds: float) -> dict[str, Any]:
    instructions: list[dict[str, Any]] = []
    if plan.action != "drop":
        if meter_id is not None:
            instructions.append({"type": "METER", "meterId": meter_id})
        if plan.queue_id is not None:
            instructions.append({"type": "QUEUE", "queueId": plan.queue_id})
        port = "NORMAL" if plan.action == "normal" else str(plan.out_port)
        instructions.append({"type": "OUTPUT", "port": port})
    else:
        instructions.append({"type": "NOACTION"})
    return {
        "priority": plan.priority,
        "timeout": max(1, int(ttl_seconds)),
        "isPermanent": False,
        "deviceId": device_id,
        "treatment": {"instructions": instructions},
        "selector": {"criteria": onos_criteria(plan.match)},
    }


def onos_meter(meter: MeterPlan, device_id: str) -> dict[str, Any]:
    return {
        "deviceId": device_id,
        "unit": "KB_PER_SEC",
        "burst": bool(meter.burst_kb),
        "bands": [{"type": "DROP", "rate": meter.rate_kbps, "burstSize": meter.burst_kb}],
    }


def onos_intent(decision: Reroute) -> dict[str, Any]:
    """``path`` holds ONOS connect points ``of:...:/PORT`` at both ends and device ids between."""
    def point(connect_point: str) -> dict[str, str]:
        device, _, port = connect_point.rpartition("/")
        if not device:
            raise ValueError(f"path end {connect_point!r} is not an ONOS connect point DEVICE/PORT")
        return {"device": device, "port": port}

    intent: dict[str, Any] = {
        "type": "PointToPointIntent",
        "appId": APP_ID,
        "key": decision.idempotency_key,
        "priority": min(65535, 1000 + decision.priority),
        "selector": {"criteria": onos_criteria(normalize_match(decision.match))},
        "ingressPoint": point(decision.path[0]),
        "egressPoint": point(decision.path[-1]),
    }
    if len(decision.path) > 2:
        intent["constraints"] = [{"type": "WaypointConstraint", "waypoints": decision.path[1:-1]}]
    return intent


class OnosError(RuntimeError):
    pass


class OnosAdapter(ControllerAdapter):
    """Talks to ``settings.onos_url`` (``http://HOST:8181/onos/v1``) with basic auth."""

    name = "onos"

    def __init__(self, settings: ControllerSettings, timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.clock = clock
        self.state = DesiredState()
        self._resources: dict[str, list[str]] = {}  # idempotency key -> created resource paths
        self._intent_expiry: dict[str, float] = {}  # intents are not switch state: their TTLs live here

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        return [self._apply_one(decision) for decision in decisions]

    def _apply_one(self, decision: Decision) -> Outcome:
        key, kind = decision.idempotency_key, decision.kind
        if decision.dry_run:
            return dry_run_outcome(decision)
        try:
            if isinstance(decision, Reroute):
                return self._apply_intent(decision)
            entry = plan_entry(decision, self.state, self.settings, self.clock())
            if isinstance(entry, Outcome):
                return entry
            upsert = self.state.upsert(entry)
            if not upsert.changed:
                return Outcome(key, kind, "unchanged")
            self._delete([old.key for old in upsert.replaced])
            self._resources[key] = self._create(entry)
            return Outcome(key, kind, "applied", ", ".join(self._resources[key]))
        except (OnosError, ValueError) as exc:
            self.state.remove(key)
            return Outcome(key, kind, "failed", str(exc))

    def _apply_intent(self, decision: Reroute) -> Outcome:
        key = decision.idempotency_key
        expires_at = decision.created_at.timestamp() + decision.ttl_seconds
        if expires_at <= self.clock():
            return Outcome(key, decision.kind, "expired", "its TTL ran out before it arrived")
        known = key in self._resources
        self._intent_expiry[key] = expires_at
        if known:
            return Outcome(key, decision.kind, "unchanged")
        self._resources[key] = [self._post("/intents", onos_intent(decision))]
        return Outcome(key, decision.kind, "applied", self._resources[key][0])

    def _create(self, entry: Entry) -> list[str]:
        created = []
        ttl = entry.expires_at - self.clock()
        for device in self.settings.onos_devices:
            meter_id = None
            if entry.plan.meter is not None:
                meter_path = self._post(f"/meters/{device}", onos_meter(entry.plan.meter, device))
                created.append(meter_path)
                meter_id = meter_path.rstrip("/").rpartition("/")[2]
            # flows go before meters when deleting: reverse creation order
            created.insert(0, self._post(f"/flows/{device}?appId={APP_ID}", onos_flow(entry.plan, device, meter_id, ttl)))
        return created

    def expire(self, now: float) -> list[str]:
        gone = [entry.key for entry in self.state.expire(now)]
        gone += [key for key, expires_at in self._intent_expiry.items() if expires_at <= now]
        for key in gone:
            self._intent_expiry.pop(key, None)
        self._delete(gone)
        return gone

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        for key in keys:
            self.state.remove(key)
            self._intent_expiry.pop(key, None)
        present = [key for key in keys if key in self._resources]
        self._delete(present)
        return present

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            for path in self._resources.pop(key, []):
                try:
                    self._request("DELETE", path)
                except OnosError as exc:
                    log.warning("could not delete %s of decision %s: %s", path, key, exc)

    # -- HTTP ---------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> str:
        """POST and return the created resource's path (from ``Location``), relative to the API."""
        location = self._request("POST", path, body)
        if not location:
            raise OnosError(f"ONOS answered POST {path} without a Location header")
        base = urlsplit(self.settings.onos_url).path.rstrip("/")
        loc = urlsplit(location).path
        return loc[len(base):] if loc.startswith(base) else loc

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> str | None:
        url = self.settings.onos_url.rstrip("/") + path
        token = base64.b64encode(f"{self.settings.onos_user}:{self.settings.onos_password}".encode()).decode()
        request = urllib.request.Request(
            url, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                return response.headers.get("Location")
        except urllib.error.HTTPError as exc:
            raise OnosError(f"ONOS rejected {method} {path}: HTTP {exc.code} {exc.read()[:200]!r}") from exc
        except OSError as exc:
            raise OnosError(f"cannot reach ONOS at {self.settings.onos_url} ({exc}); check controller.onos_url") from exc
