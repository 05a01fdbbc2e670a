"""Adapter pre-placement: load the LoRA adapters a location asks for most at its edge site
before the requests arrive.

Popularity is predicted, not only counted. Two series feed it, both forecast by the forecasting
service: each edge service reports the requests each of its adapters served
(``SITE|adapter.<name>.requests``), and the edge windows each prompt into
``LOCATION|demand.<class>.requests``. A location's demand counts at the site that serves it
(``policy.sites``), for the adapter that serves its class there (``policy.class_adapters``; by
default the edge's completion adapter serves every class), so every decision names a site the
edge services answer to and an adapter it has. A site's share of forecast requests ranks its
adapters. Observed counts in ``context.adapter_popularity`` (a context file, say) take precedence.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from nm_toolkit.schemas import Decision, PlaceAdapter, split_series_key
from policies.base import Policy, PolicyContext, first_match

DEMAND_REQUESTS = "demand.*.requests"
ADAPTER_REQUESTS = "adapter.*.requests"


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

    def __init__(self, top_k: int = 2, min_share: float = 0.1) -> None:
        self.top_k = top_k
        self.min_share = min_share

    @staticmethod
    def adapter_of(metric: str, class_adapters: dict[str, str]) -> str | None:
        """The adapter whose requests ``metric`` counts: ``adapter.<name>.requests`` names it,
        ``demand.<class>.requests`` is served by the adapter ``class_adapters`` gives its class;
        None for other metrics (and for a class no adapter serves)."""
        if fnmatchcase(metric, ADAPTER_REQUESTS):
            return metric.split(".")[1]
        if fnmatchcase(metric, DEMAND_REQUESTS):
            return first_match(metric.split(".")[1], class_adapters)
        return None

    def popularity(self, context: PolicyContext) -> dict[str, dict[str, float]]:
        """Observed counts where given, else forecast requests per adapter over the horizon, per
        serving site: the sites' own adapter series plus their locations' demand per class."""
        if context.adapter_popularity:
            return context.adapter_popularity
        popularity: dict[str, dict[str, float]] = {}
        for series_id, forecast in context.forecasts.items():
            adapter = self.adapter_of(split_series_key(series_id)[1], context.settings.class_adapters)
            if adapter is not None and (site := context.site_of_series(series_id)) is not None:
                counts = popularity.setdefault(site, {})
                counts[adapter] = counts.get(adapter, 0.0) + sum(max(0.0, v) for v in forecast.mean)
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
