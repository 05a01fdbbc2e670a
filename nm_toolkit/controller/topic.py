"""The decisions topic as an adapter: anything that is not switch state (edge compute scaling,
adapter placement) and any controller the toolkit has no adapter for reads decisions there."""

from __future__ import annotations

from collections.abc import Sequence

from nm_toolkit.bus import Producer
from nm_toolkit.controller.base import ControllerAdapter, Outcome, dry_run_outcome
from nm_toolkit.schemas import Decision, DecisionAdapter

KIND_HEADER = "nmt.decision.kind"


class DecisionTopicAdapter(ControllerAdapter):
    """Publish each decision as JSON keyed by its target (one target's decisions stay in order)."""

    name = "kafka"

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        outcomes = []
        for decision in decisions:
            if decision.dry_run:
                outcomes.append(dry_run_outcome(decision))
                continue
            self.producer.send(
                self.topic, DecisionAdapter.dump_json(decision), decision.target.encode(),
                headers=[(KIND_HEADER, decision.kind.encode())],
            )
            outcomes.append(Outcome(decision.idempotency_key, decision.kind, "applied", f"published to {self.topic}"))
        self.producer.flush()
        return outcomes
