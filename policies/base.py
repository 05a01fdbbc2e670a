"""The policy interface: ``decide(context) -> list[Decision]``, with no side effects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime

from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import Decision, Forecast


@dataclass(frozen=True)
class PolicyContext:
    """Everything a policy may look at when it decides; it must not change any of it."""

    now: datetime
    settings: PolicySettings
    forecasts: dict[str, Forecast] = field(default_factory=dict)
    capacities: dict[str, float] = field(default_factory=dict)
    applied: dict[str, Decision] = field(default_factory=dict)

    def capacity_of(self, target: str) -> float:
        return self.capacities.get(target, self.settings.capacities.get(target, self.settings.default_capacity))


class Policy(ABC):
    """A named, side-effect-free decision maker; see :mod:`policies.registry` for discovery."""

    name: str = "policy"

    @abstractmethod
    def decide(self, context: PolicyContext) -> list[Decision]: ...
