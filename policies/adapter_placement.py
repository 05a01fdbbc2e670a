"""Adapter pre-placement: load the LoRA adapters a location asks for most at its edge site
before the requests arrive.

Popularity is predicted, not only counted: the intent service windows each prompt into
``LOCATION|demand.<class>.requests`` series, the forecasting service forecasts them, and a
location's share of forecast requests per service class ranks the adapters that serve those
classes. Observed counts in ``context.adapter_popularity`` (a context file, say) take precedence.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from nm_toolkit.schemas import Decision, Forecast, PlaceAdapter, split_series_key
from policies.base import Policy, PolicyContext

DEMAND_REQUESTS = "demand.*.requests"


def demand_popularity(forecasts: Mapping[str, Forecast], pattern: str = DEMAND_REQUESTS) -> dict[str, dict[str, float]]:
    """Location -> service class -> forecast requests over the horizon, from the demand series."""
    popularity: dict[str, dict[str, float]] = {}
    for series_id, forecast in forecasts.items():
        location, metric = split_series_key(series_id)
        if fnmatchcase(metric, pattern):
            service_class = metric.split(".")[1]
            popularity.setdefault(location, {})[service_class] = sum(max(0.0, v) for v in forecast.mean)
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
        """Observed counts where given, else forecast demand per service class."""
        if context.adapter_popularity:
            return context.adapter_popularity
        return {
            site: {f"{self.adapter_prefix}{cls}": n for cls, n in classes.items()}
            for site, classes in demand_popularity(context.forecasts).items()
        }

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
