"""The desired switch state: which decisions are in force, their flow plans and when they expire.

It is the controller's source of truth. Switches are reconciled to it when they (re)connect, TTL
expiry removes entries from it, and it never talks to a switch itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from nm_toolkit.config import ControllerSettings
from nm_toolkit.controller import openflow
from nm_toolkit.controller.base import Outcome, dry_run_outcome
from nm_toolkit.controller.openflow import FlowPlan
from nm_toolkit.schemas import Decision


@dataclass(frozen=True)
class Entry:
    decision: Decision
    plan: FlowPlan
    expires_at: float  # Unix seconds

    @property
    def key(self) -> str:
        return self.decision.idempotency_key

    @property
    def slot(self) -> tuple[object, ...]:
        """OpenFlow identifies a flow by (match, priority): two entries cannot share a slot."""
        return (self.plan.match, self.plan.priority)


@dataclass(frozen=True)
class Upsert:
    """The outcome of :meth:`DesiredState.upsert`: entries displaced, and whether anything changed."""

    replaced: list[Entry]
    changed: bool


class DesiredState:
    """Thread-safe map of idempotency key -> :class:`Entry`, with meter-id allocation."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def upsert(self, entry: Entry) -> Upsert:
        """Insert or refresh ``entry``; an entry with the same key but another plan, or another
        key in the same OpenFlow slot, is replaced and returned so its switch state can go."""
        with self._lock:
            previous = self._entries.get(entry.key)
            replaced = [
                other for other in self._entries.values()
                if other.slot == entry.slot and other.key != entry.key
            ]
            if previous is not None and previous.plan != entry.plan:
                replaced.append(previous)
            for old in replaced:
                self._entries.pop(old.key, None)
            self._entries[entry.key] = entry
            return Upsert(replaced, changed=previous is None or previous.plan != entry.plan)

    def expire(self, now: float) -> list[Entry]:
        """Remove and return every entry whose TTL has run out."""
        with self._lock:
            gone = [entry for entry in self._entries.values() if entry.expires_at <= now]
            for entry in gone:
                del self._entries[entry.key]
            return gone

    def remove(self, key: str) -> Entry | None:
        with self._lock:
            return self._entries.pop(key, None)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            return self._entries.get(key)

    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda entry: entry.plan.priority)

    def meter_id_for(self, key: str) -> int:
        """The key's current meter id, or the lowest one no entry uses (ids start at 1)."""
        with self._lock:
            if key in self._entries and self._entries[key].plan.meter is not None:
                return self._entries[key].plan.meter.meter_id  # type: ignore[union-attr]
            used = {e.plan.meter.meter_id for e in self._entries.values() if e.plan.meter is not None}
            return next(i for i in range(1, len(used) + 2) if i not in used)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def plan_entry(decision: Decision, state: DesiredState, settings: ControllerSettings, now: float) -> Entry | Outcome:
    """The desired-state entry of ``decision``, or the outcome that says why there is none
    (dry run, TTL already over, nothing a switch can do with it)."""
    key, kind = decision.idempotency_key, decision.kind
    if decision.dry_run:
        return dry_run_outcome(decision)
    expires_at = decision.created_at.timestamp() + decision.ttl_seconds
    if expires_at <= now:
        return Outcome(key, kind, "expired", "its TTL ran out before it arrived")
    try:
        plan = openflow.compile_decision(
            decision,
            meter_id=state.meter_id_for(key) if openflow.needs_meter(decision) else None,
            target_matches=settings.targets,
            bandwidth_unit_kbps=settings.bandwidth_unit_kbps,
            reservation_queue_id=settings.reservation_queue_id,
            next_hop_ports=settings.next_hop_ports,
        )
    except (openflow.UnsupportedDecision, ValueError) as exc:
        return Outcome(key, kind, "unsupported", str(exc))
    return Entry(decision, plan, expires_at)
