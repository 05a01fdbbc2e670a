"""LLM-compute autoscaling from forecast demand: enough workers at each site for the forecast
peak, plus headroom.

Demand comes from the running system: the edge service windows every prompt into
``LOCATION|demand.<class>.requests`` series (requests per window; the site serving each location
under ``policy.sites`` is scaled for it) and reports ``SITE|prompts`` (prompts per window) of its own; the cloud service reports ``CLOUD|requests`` (the escalated
requests it answered per window). The forecasting service forecasts them all. A rate series such
as ``SITE|prompts_per_s`` is read as it is. :class:`EdgeAutoscalePolicy` scales the edge sites,
:class:`CloudAutoscalePolicy` the cloud (one rule, other series and another capacity per replica).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import numpy as np

from nm_toolkit.schemas import Decision, ScaleCompute, split_series_key
from policies.base import DEMAND_METRICS, Load, Policy, PolicyContext, serving_site


def replicas_for(peak_demand: float, per_replica: float, headroom: float, low: int, high: int) -> int:
    """Workers that serve ``peak_demand * (1 + headroom)``, clamped to ``[low, high]``."""
    return max(low, min(high, math.ceil(max(0.0, peak_demand) * (1 + headroom) / per_replica)))


def site_load(load: Mapping[str, Load], sites: Mapping[str, list[str]]) -> dict[str, tuple[Load, list[str]]]:
    """Per serving site, the prompt load of ``load`` (per series: a rate, or an array of rates over
    time) and the series it adds up. A location's demand series count at the site that serves it
    (:func:`~policies.base.serving_site`). A site's own reports (``SITE|prompts``) and its
    locations' demand count the same prompts, so each family is added up on its own and the larger
    stands (step by step for arrays); the series named are the larger family's."""
    families: dict[str, dict[bool, tuple[Load, list[str]]]] = {}
    for series_id, value in sorted(load.items()):
        if (site := serving_site(series_id, sites)) is None:
            continue  # demand at a location no declared site serves
        demand = fnmatchcase(split_series_key(series_id)[1], DEMAND_METRICS)
        total, series = families.setdefault(site, {}).get(demand, (0.0, []))
        families[site][demand] = (total + value, [*series, series_id])
    out: dict[str, tuple[Load, list[str]]] = {}
    for site, by_family in families.items():
        ranked = sorted(by_family.values(), key=lambda item: -float(np.max(item[0])))
        out[site] = (functools.reduce(np.maximum, [v for v, _ in ranked]), ranked[0][1])
    return out


class EdgeAutoscalePolicy(Policy):
    """Per site, the forecast prompt rate (the sum over its demand series) sets the replica count
    that covers the upper bound of the forecast."""

    name = "edge_autoscale"
    demand = "prompts"  # what the reason calls the forecast demand

    def __init__(
        self,
        rate_metrics: Sequence[str] = ("prompts_per_s",),
        count_metrics: Sequence[str] = ("demand.*.requests", "prompts"),
        prompts_per_replica: float = 5.0,
        headroom: float = 0.2,
        min_replicas: int = 1,
        max_replicas: int = 16,
    ) -> None:
        self.rate_metrics = [rate_metrics] if isinstance(rate_metrics, str) else list(rate_metrics)
        self.count_metrics = [count_metrics] if isinstance(count_metrics, str) else list(count_metrics)
        self.prompts_per_replica = prompts_per_replica
        self.headroom = headroom
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def per_second(self, metric: str, step_seconds: float) -> float | None:
        """What one unit of ``metric`` is in prompts per second: 1 for a rate series, 1 / step for a
        count per window; None for a metric that is not prompt demand."""
        if any(fnmatchcase(metric, p) for p in self.rate_metrics):
            return 1.0
        if any(fnmatchcase(metric, p) for p in self.count_metrics):
            return 1.0 / step_seconds
        return None

    def site_rates(self, context: PolicyContext) -> dict[str, tuple[float, list[str]]]:
        """Per serving site, the forecast peak prompt rate (the upper bound) and the series it
        comes from (:func:`site_load`)."""
        rates: dict[str, float] = {}
        for series_id, forecast in context.forecasts.items():
            if (scale := self.per_second(split_series_key(series_id)[1], forecast.step_seconds)) is not None:
                rates[series_id] = scale * max(forecast.upper or forecast.mean)
        return site_load(rates, context.settings.sites)

    def decide(self, context: PolicyContext) -> list[Decision]:
        decisions: list[Decision] = []
        for site, (rate, series) in sorted(self.site_rates(context).items()):
            replicas = replicas_for(rate, self.prompts_per_replica, self.headroom, self.min_replicas, self.max_replicas)
            decisions.append(
                ScaleCompute(
                    **self.stamp(context, site, str(replicas)),
                    target=site,
                    replicas=replicas,
                    reason=(
                        f"forecast {self.demand} at {site} peak at {rate:,.3f}/s ({', '.join(series)}); "
                        f"{self.prompts_per_replica:g}/s per replica with {self.headroom:.0%} headroom"
                    ),
                )
            )
        return decisions


class CloudAutoscalePolicy(EdgeAutoscalePolicy):
    """Cloud-LLM replicas from the cloud service's own forecast load (``CLOUD|requests``, the
    requests it answered per window): the edge's rule with the cloud's series and the requests one
    cloud replica answers per second (``prompts_per_replica``: measure yours, for example with
    ``bench/serving.py``). Its ``scale_compute`` decision (target: the cloud site,
    ``llm.cloud_site``) is carried out by ``nmt llm supervise --cloud``, or by any orchestrator
    that reads the decisions topic."""

    name = "cloud_autoscale"
    demand = "cloud requests"

    def __init__(
        self,
        rate_metrics: Sequence[str] = ("requests_per_s",),
        count_metrics: Sequence[str] = ("requests",),
        prompts_per_replica: float = 10.0,
        headroom: float = 0.2,
        min_replicas: int = 1,
        max_replicas: int = 16,
    ) -> None:
        super().__init__(rate_metrics, count_metrics, prompts_per_replica, headroom, min_replicas, max_replicas)
