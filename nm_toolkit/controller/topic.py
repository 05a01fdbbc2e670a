"""The decisions topic as an adapter: anything that is not switch state (edge compute scaling,
adapter placement) and any controller the toolkit has no adapter for reads decisions there."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from nm_toolkit.bus import Producer
from nm_toolkit.controller.base import ControllerAdapter, Outcome, dry_run_outcome
from nm_toolkit.schemas import Decision, DecisionAdapter
from policies.guardrails import same_effect

KIND_HEADER = "nmt.decision.kind"


class DecisionTopicAdapter(ControllerAdapter):
    """Publish each decision as JSON keyed by its idempotency key: the decisions topic is a
    compacted table whose latest value per key is the decision in force, and a withdrawn one is a
    tombstone (a null value) under its key.

    The topic carries changes: a decision that re-states one published before is sent again
    only once half of that one's TTL has passed, so readers see it extended before it lapses.
    """

    name = "kafka"

    def __init__(self, producer: Producer, topic: str, clock: Callable[[], float] = time.time) -> None:
        self.producer = producer
        self.topic = topic
        self.clock = clock
        self._published: dict[str, Decision] = {}

    def _is_fresh(self, decision: Decision) -> bool:
        earlier = self._published.get(decision.idempotency_key)
        if earlier is None or not same_effect(earlier, decision):
            return False
        return self.clock() < earlier.created_at.timestamp() + earlier.ttl_seconds / 2

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        outcomes = []
        for decision in decisions:
            if decision.dry_run:
                outcomes.append(dry_run_outcome(decision))
                continue
            if self._is_fresh(decision):
                outcomes.append(Outcome(decision.idempotency_key, decision.kind, "unchanged"))
                continue
            self._published[decision.idempotency_key] = decision
            self.producer.send(
                self.topic, DecisionAdapter.dump_json(decision), decision.idempotency_key.encode(),
                headers=[(KIND_HEADER, decision.kind.encode())],
            )
            outcomes.append(Outcome(decision.idempotency_key, decision.kind, "applied", f"published to {self.topic}"))
        self.producer.flush()
        return outcomes

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        """A tombstone for each withdrawn decision this adapter published."""
        gone = [key for key in keys if self._published.pop(key, None) is not None]
        for key in gone:
            self.producer.send(self.topic, None, key.encode())
        self.producer.flush()
        return gone

    def expire(self, now: float) -> list[str]:
        """Forget what readers will have expired themselves; nothing to send."""
        gone = [k for k, d in self._published.items() if d.created_at.timestamp() + d.ttl_seconds <= now]
        for key in gone:
            del self._published[key]
        return gone
