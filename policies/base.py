"""The policy interface: ``decide(context) -> list[Decision]``, with no side effects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import TypeVar

import numpy as np

from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import Decision, Forecast, split_series_key
from policies.intents import NetworkIntent


def capacity_of(target: str, capacities: Mapping[str, float], settings: PolicySettings) -> float:
    """``target``'s capacity: the one measured or given at run time, else ``policy.capacities``,
    else ``policy.default_capacity``."""
    return capacities.get(target, settings.capacities.get(target, settings.default_capacity))


def site_of(location: str, sites: Mapping[str, list[str]]) -> str | None:
    """The edge site that serves ``location`` (a cell): the first site one of whose patterns
    matches it; a site's own name is that site. None: no declared site serves it."""
    if location in sites:
        return location
    return next((site for site, patterns in sites.items() if any(fnmatchcase(location, p) for p in patterns)), None)


def first_match(name: str, patterns: Mapping[str, str]) -> str | None:
    """The value of the first pattern of ``patterns`` that ``name`` matches."""
    return next((value for pattern, value in patterns.items() if fnmatchcase(name, pattern)), None)


# a load figure: one value (a forecast's peak) or values over time (a trace's column), combined alike
Load = TypeVar("Load", float, np.ndarray)

DEMAND_METRICS = "demand.*"  # LOCATION|demand.<class>.<measure>: what users at a location ask for


def serving_site(series_id: str, sites: Mapping[str, list[str]]) -> str | None:
    """Where ``series_id``'s load is served: the site serving the location of a demand series
    (``cell-7|demand.video.requests`` -> the site of ``cell-7`` under ``sites``; None when no site
    serves it), and the source itself for a site's own series (``edge-0|prompts``)."""
    source, metric = split_series_key(series_id)
    return site_of(source, sites) if fnmatchcase(metric, DEMAND_METRICS) else source


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

    def site_of_series(self, series_id: str) -> str | None:
        """The site that serves ``series_id``'s load (:func:`serving_site` under ``policy.sites``)."""
        return serving_site(series_id, self.settings.sites)


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
