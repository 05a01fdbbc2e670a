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
from nm_toolkit.controller.openflow import FlowPlan, QueuePlan
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
    """The outcome of :meth:`DesiredState.upsert`: entries displaced (their switch state goes),
    the key's previous entry when it is revised in its own slot (its switch state is modified in
    place), and whether the plan changed at all."""

    replaced: list[Entry]
    changed: bool
    revised: Entry | None = None


class DesiredState:
    """Thread-safe map of idempotency key -> :class:`Entry`, with meter-id allocation."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def upsert(self, entry: Entry) -> Upsert:
        """Insert or refresh ``entry``. Another key in the same OpenFlow slot, or the same key
        in another slot, is replaced and returned so its switch state can go; the same key with
        another plan in the same slot is returned as ``revised``."""
        with self._lock:
            previous = self._entries.get(entry.key)
            replaced = [
                other for other in self._entries.values()
                if other.slot == entry.slot and other.key != entry.key
            ]
            changed = previous is None or previous.plan != entry.plan
            revised = previous if changed and previous is not None and previous.slot == entry.slot else None
            if changed and previous is not None and revised is None:
                replaced.append(previous)
            for old in replaced:
                self._entries.pop(old.key, None)
            self._entries[entry.key] = entry
            return Upsert(replaced, changed, revised)

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
            meters = {k: e.plan.meter.meter_id for k, e in self._entries.items() if e.plan.meter is not None}
            return _id_for(key, meters, first=1)

    def queue_id_for(self, key: str, first: int) -> int:
        """The key's current queue id, or the lowest one from ``first`` up that no entry uses."""
        with self._lock:
            queues = {k: e.plan.queue.queue_id for k, e in self._entries.items() if e.plan.queue is not None}
            return _id_for(key, queues, first)

    def queues(self) -> dict[int, QueuePlan]:
        """Every queue the entries' flows name, by id (class queues are shared by their flows)."""
        with self._lock:
            return {e.plan.queue.queue_id: e.plan.queue for e in self._entries.values() if e.plan.queue is not None}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _id_for(key: str, ids: dict[str, int], first: int) -> int:
    """``key``'s id in ``ids``, or the lowest free one from ``first`` up."""
    if key in ids:
        return ids[key]
    used = set(ids.values())
    return next(i for i in range(first, first + len(used) + 1) if i not in used)


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
            queue_id=state.queue_id_for(key, settings.queues.first_reservation_queue)
            if openflow.needs_queue(decision) else None,
            queues=settings.queues,
            next_hop_ports=settings.next_hop_ports,
        )
    except (openflow.UnsupportedDecision, ValueError) as exc:
        return Outcome(key, kind, "unsupported", str(exc))
    return Entry(decision, plan, expires_at)
