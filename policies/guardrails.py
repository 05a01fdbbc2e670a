"""Guardrails: what every decision must pass before any adapter applies it.

Rules, in the order they run:

0. ``actuator``   an LLM-service decision (``scale_compute``, ``place_adapter``, ``place_model``)
                  must target a site whose services carry it out: an edge site of ``policy.sites``
                  (its edge services and supervisor), or for ``scale_compute`` the cloud
                  (``llm.cloud_site``). A decision no one would carry out is rejected, counted.
1. ``tenant``     a decision made for a tenant (from its intent) may only touch that tenant's
                  targets (``controller.guardrails.tenants``); the network's own operators
                  (``operator_tenants``, the tenant of intents that name none) may touch any.
2. ``capacity``   no reservation above the capacity of its link or cell.
3. ``block_all``  no deny rule without a narrowing match field: it would drop all traffic.
4. ``controller`` no deny rule that can match the controller's own OpenFlow channel.
5. ``conflict``   two decisions for the same slot (same target and match, same kind family):
                  the higher priority wins; at a tie a policy's newer decision revises its own,
                  and otherwise the decision in force stays (between two new ones, the newer
                  wins), so a duplicate never displaces what the switch already carries out. The loser is rejected or, when it is already applied, reported as
                  superseded.
6. ``rate``       at most ``max_changes_per_minute`` changes in any sliding minute; refreshes of
                  decisions already in force and dry runs are not changes. Higher priorities
                  are admitted first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from nm_toolkit.config import GuardrailSettings, Settings
from nm_toolkit.schemas import (
    Acl,
    Decision,
    PlaceAdapter,
    PlaceModel,
    QosQueue,
    RateLimit,
    Reroute,
    Reservation,
    ScaleCompute,
)

Rule = str
_NARROWING = {"in_port", "eth_src", "eth_dst", "vlan_vid", "ip_proto", "ipv4_src", "ipv4_dst",
              "tcp_src", "tcp_dst", "udp_src", "udp_dst", "ip_dscp"}


@dataclass(frozen=True)
class Rejection:
    decision: Decision
    rule: Rule
    reason: str


@dataclass(frozen=True)
class Conflict:
    winner: Decision
    loser: Decision
    reason: str


@dataclass
class GuardrailReport:
    accepted: list[Decision] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def superseded(self) -> list[Decision]:
        """Applied decisions that lost a conflict and should be withdrawn."""
        rejected = {r.decision.id for r in self.rejected}
        return [c.loser for c in self.conflicts if c.loser.id not in rejected]


def llm_actuators(settings: Settings) -> dict[str, frozenset[str]]:
    """Per LLM-service decision kind, the targets something carries it out at: the edge sites of
    ``policy.sites`` (edge services place adapters, ``nmt llm supervise`` runs replicas and picks
    the model) and the cloud site (``nmt llm supervise --cloud`` runs its replicas)."""
    edge = frozenset(settings.policy.sites)
    return {"place_adapter": edge, "place_model": edge, "scale_compute": edge | {settings.llm.cloud_site}}


class Guardrails:
    """Stateful only in the change-rate window; everything else is a pure check.

    ``actuators``: per decision kind, the targets it can be carried out at (:func:`llm_actuators`);
    kinds it does not name are not checked by the ``actuator`` rule."""

    def __init__(
        self,
        settings: GuardrailSettings,
        capacity_of: Callable[[str], float],
        clock: Callable[[], float] = time.monotonic,
        actuators: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.capacity_of = capacity_of
        self.clock = clock
        self.actuators = dict(actuators or {})
        self._changes: deque[float] = deque()

    def check(self, decisions: Iterable[Decision], applied: Mapping[str, Decision] | None = None) -> GuardrailReport:
        applied = applied or {}
        report = GuardrailReport()
        candidates: list[Decision] = []
        for decision in decisions:
            problem = self._static_problem(decision)
            if problem is None:
                candidates.append(decision)
            else:
                report.rejected.append(Rejection(decision, *problem))
        candidates = self._resolve_conflicts(candidates, applied, report)
        report.accepted = self._admit_rate(candidates, applied, report)
        return report

    # -- rules 1-4: one decision at a time -------------------------------------------------------
    def _static_problem(self, decision: Decision) -> tuple[Rule, str] | None:
        if (targets := self.actuators.get(decision.kind)) is not None and decision.target not in targets:
            return "actuator", (
                f"nothing carries out {decision.kind} at {decision.target!r} (sites: {', '.join(sorted(targets))}): "
                "declare the site that serves it under policy.sites"
            )
        if decision.tenant is not None and decision.tenant not in self.settings.operator_tenants:
            owned = self.settings.tenants.get(decision.tenant)
            if owned is None:
                return "tenant", f"tenant {decision.tenant!r} is not configured under controller.guardrails.tenants"
            if decision.target not in owned:
                return "tenant", f"target {decision.target!r} does not belong to tenant {decision.tenant!r}"
        if isinstance(decision, Reservation):
            capacity = min(decision.capacity, self.capacity_of(decision.target))
            if decision.bandwidth > capacity:
                return "capacity", f"reservation of {decision.bandwidth:g} exceeds the capacity {capacity:g} of {decision.target}"
        if isinstance(decision, Acl) and decision.action == "deny":
            if not self._narrows(decision.match):
                return "block_all", "a deny rule needs at least one narrowing match field, or it drops all traffic"
            if self._hits_controller(decision.match):
                return "controller", "this deny rule can match the controller's OpenFlow channel"
        return None

    @staticmethod
    def _narrows(match: Mapping[str, str | int]) -> bool:
        for name, value in match.items():
            if name not in _NARROWING:
                continue
            if name in ("ipv4_src", "ipv4_dst") and ipaddress.IPv4Network(str(value), strict=False).prefixlen == 0:
                continue
            return True
        return False

    def _hits_controller(self, match: Mapping[str, str | int]) -> bool:
        """True when some controller-channel packet (TCP to or from a controller port on a
        controller address) satisfies every field of ``match``."""
        ports = set(self.settings.controller_ports)
        nets = [ipaddress.IPv4Network(a, strict=False) for a in self.settings.controller_addresses]
        for name, value in match.items():
            if name == "ip_proto":
                if int(value) != 6:
                    return False
            elif name == "eth_type":
                if int(value) != 0x0800:
                    return False
            elif name in ("ipv4_src", "ipv4_dst"):
                if not any(ipaddress.IPv4Network(str(value), strict=False).overlaps(c) for c in nets):
                    return False
            elif name not in ("tcp_src", "tcp_dst"):  # ports are judged below, together
                return False  # udp ports, in_port, macs...: not the TCP channel
        # Of the channel's two ends one is a controller port and the other an unknowable
        # ephemeral port: a port field hits the channel when it names a controller port.
        tcp_ports = [int(match[n]) for n in ("tcp_src", "tcp_dst") if n in match]
        return not tcp_ports or any(p in ports for p in tcp_ports)

    # -- rule 5: conflicts -----------------------------------------------------------------------
    def _resolve_conflicts(
        self, candidates: list[Decision], applied: Mapping[str, Decision], report: GuardrailReport
    ) -> list[Decision]:
        winners: dict[tuple[object, ...], Decision] = {}
        for current in applied.values():
            winners[slot_of(current)] = current
        kept: dict[str, Decision] = {}
        for decision in candidates:
            slot = slot_of(decision)
            incumbent = winners.get(slot)
            if incumbent is None or incumbent.idempotency_key == decision.idempotency_key:
                winners[slot] = decision
                kept[decision.id] = decision
                continue
            if _outranks(decision, incumbent, applied):
                winner, loser = decision, incumbent
                winners[slot] = decision
                kept[decision.id] = decision
                if loser.id in kept:
                    del kept[loser.id]
                    report.rejected.append(Rejection(loser, "conflict", f"lost to {winner.idempotency_key}"))
            else:
                winner, loser = incumbent, decision
                report.rejected.append(Rejection(loser, "conflict", f"lost to {winner.idempotency_key}"))
            report.conflicts.append(
                Conflict(winner, loser, f"same slot {slot}: priority {winner.priority} beats {loser.priority}")
            )
        return [d for d in candidates if d.id in kept]

    # -- rule 6: change rate ---------------------------------------------------------------------
    def _admit_rate(
        self, candidates: list[Decision], applied: Mapping[str, Decision], report: GuardrailReport
    ) -> list[Decision]:
        now = self.clock()
        while self._changes and self._changes[0] <= now - 60.0:
            self._changes.popleft()
        admitted: list[Decision] = []
        for decision in sorted(candidates, key=lambda d: -d.priority):
            if decision.dry_run or _is_refresh(decision, applied):
                admitted.append(decision)
            elif len(self._changes) < self.settings.max_changes_per_minute:
                self._changes.append(now)
                admitted.append(decision)
            else:
                report.rejected.append(
                    Rejection(decision, "rate", f"more than {self.settings.max_changes_per_minute} changes per minute")
                )
        order = {d.id: i for i, d in enumerate(candidates)}
        return sorted(admitted, key=lambda d: order[d.id])


def slot_of(decision: Decision) -> tuple[object, ...]:
    """What two decisions must share to conflict: the same thing on the same target."""
    match decision:
        case Acl() | QosQueue() | Reroute():
            return ("traffic", decision.target, tuple(sorted(decision.match.items())))
        case RateLimit() | Reservation():
            return ("bandwidth", decision.target)
        case ScaleCompute():
            return ("compute", decision.target)
        case PlaceAdapter():
            return ("adapter", decision.target, decision.adapter)
        case PlaceModel():
            return ("model", decision.target)
    raise TypeError(f"unknown decision kind {decision.kind}")


def _outranks(challenger: Decision, incumbent: Decision, applied: Mapping[str, Decision]) -> bool:
    """Higher priority wins. At equal priority a policy's newer decision revises its own earlier one
    (an autoscaler's new replica count); otherwise what is in force stays: a decision of another
    source (a duplicate intent, say) would only remove and re-install the same flows every round.
    Between two decisions not in force, the newer wins."""
    if challenger.priority != incumbent.priority:
        return challenger.priority > incumbent.priority
    revision = challenger.policy == incumbent.policy and challenger.intent_id == incumbent.intent_id
    incumbent_in_force = incumbent.idempotency_key in applied
    if not revision and incumbent_in_force != (challenger.idempotency_key in applied):
        return not incumbent_in_force
    return challenger.created_at > incumbent.created_at


def same_effect(a: Decision, b: Decision) -> bool:
    """True when ``b`` re-states ``a`` (same key and content; only id, time and wording differ)."""
    ignore = {"id", "created_at", "reason"}
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


def _is_refresh(decision: Decision, applied: Mapping[str, Decision]) -> bool:
    current = applied.get(decision.idempotency_key)
    return current is not None and same_effect(current, decision)
