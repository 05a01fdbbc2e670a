"""Edge-compute autoscaling from forecast prompt demand: enough edge-LLM workers at each site
for the forecast peak, plus headroom.

Demand comes from the running system: the intent service windows every prompt into
``LOCATION|demand.<class>.requests`` series (requests per window), and the edge services report
``SITE|prompts`` (prompts per window) of their own; the forecasting service forecasts both. A
rate series such as ``SITE|prompts_per_s`` is read as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

from nm_toolkit.schemas import Decision, ScaleCompute, split_series_key
from policies.base import Policy, PolicyContext


def replicas_for(peak_demand: float, per_replica: float, headroom: float, low: int, high: int) -> int:
    """Workers that serve ``peak_demand * (1 + headroom)``, clamped to ``[low, high]``."""
    return max(low, min(high, math.ceil(max(0.0, peak_demand) * (1 + headroom) / per_replica)))


class EdgeAutoscalePolicy(Policy):
    """Per site, the forecast prompt rate (the sum over its demand series) sets the replica count
    that covers the upper bound of the forecast."""

    name = "edge_autoscale"

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
        """Per site, the forecast peak prompt rate (the upper bound) and the series it adds up."""
        rates: dict[str, tuple[float, list[str]]] = {}
        for series_id, forecast in sorted(context.forecasts.items()):
            site, metric = split_series_key(series_id)
            if (scale := self.per_second(metric, forecast.step_seconds)) is None:
                continue
            total, series = rates.get(site, (0.0, []))
            rates[site] = (total + scale * max(forecast.upper or forecast.mean), [*series, series_id])
        return rates

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
                        f"forecast prompts at {site} peak at {rate:,.3f}/s ({', '.join(series)}); "
                        f"{self.prompts_per_replica:g}/s per replica with {self.headroom:.0%} headroom"
                    ),
                )
            )
        return decisions
