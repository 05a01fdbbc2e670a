"""The policy interface: ``decide(context) -> list[Decision]``, with no side effects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import Decision, Forecast
from policies.intents import NetworkIntent


def capacity_of(target: str, capacities: Mapping[str, float], settings: PolicySettings) -> float:
    """``target``'s capacity: the one measured or given at run time, else ``policy.capacities``,
    else ``policy.default_capacity``."""
    return capacities.get(target, settings.capacities.get(target, settings.default_capacity))


@dataclass(frozen=True)
class PolicyContext:
    """Everything a policy may look at when it decides; it must not change any of it.

    ``forecasts`` are keyed by series id (``source|metric``); ``capacities`` by target (cell,
    link); ``adapter_popularity`` maps an edge site to adapter -> recent request count;
    ``applied`` is the decisions currently in force, by idempotency key; ``targets`` maps a target
    (cell, site, a group such as "students") to the match of its traffic (``controller.targets``).
    """

    now: datetime
    settings: PolicySettings
    forecasts: dict[str, Forecast] = field(default_factory=dict)
    capacities: dict[str, float] = field(default_factory=dict)
    applied: dict[str, Decision] = field(default_factory=dict)
    intents: list[NetworkIntent] = field(default_factory=list)
    adapter_popularity: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, dict[str, str | int]] = field(default_factory=dict)

    def capacity_of(self, target: str) -> float:
        return capacity_of(target, self.capacities, self.settings)


class Policy(ABC):
    """A named, side-effect-free decision maker; see :mod:`policies.registry` for discovery.

    Parameters go to ``__init__`` (from ``controller.policy_params.<name>`` in the config) and
    are stored as given, scikit-learn style; ``decide`` does the work.
    """

    name: str = "policy"

    @abstractmethod
    def decide(self, context: PolicyContext) -> list[Decision]: ...

    def stamp(self, context: PolicyContext, *key_parts: str) -> dict[str, object]:
        """The fields every decision of this policy shares: an idempotency key built from
        ``key_parts`` (same inputs, same key, so re-deciding refreshes instead of duplicating),
        the policy name, the configured TTL and the dry-run flag."""
        return {
            "idempotency_key": ":".join((self.name, *key_parts)),
            "policy": self.name,
            "ttl_seconds": context.settings.decision_ttl_seconds,
            "dry_run": context.settings.dry_run,
        }
