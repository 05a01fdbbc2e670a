"""What every controller adapter does: apply decisions and say, per decision, what happened."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nm_toolkit.schemas import Decision

Status = Literal["applied", "unchanged", "dry_run", "expired", "unsupported", "failed"]


@dataclass(frozen=True)
class Outcome:
    """The fate of one decision at one adapter; ``detail`` says why when it was not applied."""

    key: str
    kind: str
    status: Status
    detail: str = ""


class ControllerAdapter(ABC):
    """Applies decisions to one kind of controller (OpenFlow switches, ONOS, Faucet, a topic)."""

    name: str = "adapter"

    @abstractmethod
    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        """Apply each decision (skipping ``dry_run`` ones) and report one outcome per decision."""

    def expire(self, now: float) -> list[str]:
        """Remove what outlived its TTL; returns the idempotency keys removed."""
        return []

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        """Remove decisions before their TTL (they lost a conflict); returns the keys removed.
        Adapters whose controller expires state on its own may leave this to the TTL."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""


def dry_run_outcome(decision: Decision) -> Outcome:
    return Outcome(decision.idempotency_key, decision.kind, "dry_run", "dry run: nothing was sent")
