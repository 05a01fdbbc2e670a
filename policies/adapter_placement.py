"""Adapter pre-placement: load the LoRA adapters a location asks for most at its edge site
before the requests arrive.

Popularity is predicted, not only counted. Two series feed it, both forecast by the forecasting
service: each edge service reports the requests each of its adapters served
(``SITE|adapter.<name>.requests``), and the intent service windows each prompt into
``LOCATION|demand.<class>.requests`` (a service class names the adapter ``<prefix><class>``).
A site's share of forecast requests ranks its adapters. Observed counts in
``context.adapter_popularity`` (a context file, say) take precedence.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from nm_toolkit.schemas import Decision, Forecast, PlaceAdapter, split_series_key
from policies.base import Policy, PolicyContext

DEMAND_REQUESTS = "demand.*.requests"
ADAPTER_REQUESTS = "adapter.*.requests"


def demand_popularity(forecasts: Mapping[str, Forecast], pattern: str = DEMAND_REQUESTS) -> dict[str, dict[str, float]]:
    """Location -> the middle part of the metric (service class, adapter) -> forecast requests over
    the horizon, from the series whose metric matches ``pattern`` (``<kind>.<name>.requests``)."""
    popularity: dict[str, dict[str, float]] = {}
    for series_id, forecast in forecasts.items():
        location, metric = split_series_key(series_id)
        if fnmatchcase(metric, pattern):
            name = metric.split(".")[1]
            popularity.setdefault(location, {})[name] = sum(max(0.0, v) for v in forecast.mean)
    return popularity


def popular_adapters(counts: dict[str, float], top_k: int, min_share: float) -> list[tuple[str, float]]:
    """The ``top_k`` adapters by share of requests, keeping those at or above ``min_share``."""
    total = sum(max(0.0, c) for c in counts.values())
    if total <= 0:
        return []
    ranked = sorted(((name, c / total) for name, c in counts.items()), key=lambda item: (-item[1], item[0]))
    return [(name, share) for name, share in ranked[:top_k] if share >= min_share]


class AdapterPlacementPolicy(Policy):
    """One PlaceAdapter decision per (site, popular adapter)."""

    name = "adapter_placement"

    def __init__(self, top_k: int = 2, min_share: float = 0.1, adapter_prefix: str = "") -> None:
        """``adapter_prefix``: forecast service classes name adapters ``<prefix><class>``."""
        self.top_k = top_k
        self.min_share = min_share
        self.adapter_prefix = adapter_prefix

    def popularity(self, context: PolicyContext) -> dict[str, dict[str, float]]:
        """Observed counts where given, else forecast requests per adapter: the sites' own adapter
        series, plus the demand per service class."""
        if context.adapter_popularity:
            return context.adapter_popularity
        popularity = demand_popularity(context.forecasts, ADAPTER_REQUESTS)
        for site, classes in demand_popularity(context.forecasts).items():
            counts = popularity.setdefault(site, {})
            for service_class, requests in classes.items():
                adapter = f"{self.adapter_prefix}{service_class}"
                counts[adapter] = counts.get(adapter, 0.0) + requests
        return popularity

    def decide(self, context: PolicyContext) -> list[Decision]:
        decisions: list[Decision] = []
        for site, counts in sorted(self.popularity(context).items()):
            for adapter, share in popular_adapters(counts, self.top_k, self.min_share):
                decisions.append(
                    PlaceAdapter(
                        **self.stamp(context, site, adapter),
                        target=site,
                        adapter=adapter,
                        reason=f"adapter {adapter} serves {share:.0%} of the (forecast) requests at {site}",
                    )
                )
        return decisions
