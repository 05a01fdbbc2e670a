"""Edge-compute autoscaling from forecast prompt demand: enough edge-LLM workers at each site
for the forecast peak, plus headroom."""

from __future__ import annotations

import math

from nm_toolkit.schemas import Decision, ScaleCompute, split_series_key
from policies.base import Policy, PolicyContext


def replicas_for(peak_demand: float, per_replica: float, headroom: float, low: int, high: int) -> int:
    """Workers that serve ``peak_demand * (1 + headroom)``, clamped to ``[low, high]``."""
    return max(low, min(high, math.ceil(max(0.0, peak_demand) * (1 + headroom) / per_replica)))


class EdgeAutoscalePolicy(Policy):
    """For every ``SITE|<metric>`` forecast (prompts per second at an edge site), ask for the
    replica count that covers the upper bound of the forecast."""

    name = "edge_autoscale"

    def __init__(
        self,
        metric: str = "prompts_per_s",
        prompts_per_replica: float = 5.0,
        headroom: float = 0.2,
        min_replicas: int = 1,
        max_replicas: int = 16,
    ) -> None:
        self.metric = metric
        self.prompts_per_replica = prompts_per_replica
        self.headroom = headroom
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def decide(self, context: PolicyContext) -> list[Decision]:
        decisions: list[Decision] = []
        for series_id, forecast in sorted(context.forecasts.items()):
            site, metric = split_series_key(series_id)
            if metric != self.metric:
                continue
            peak = max(forecast.upper or forecast.mean)
            replicas = replicas_for(peak, self.prompts_per_replica, self.headroom, self.min_replicas, self.max_replicas)
            decisions.append(
                ScaleCompute(
                    **self.stamp(context, site, str(replicas)),
                    target=site,
                    replicas=replicas,
                    reason=(
                        f"{forecast.model} forecast of {series_id} peaks at {peak:,.2f}/s; "
                        f"{self.prompts_per_replica:g}/s per replica with {self.headroom:.0%} headroom"
                    ),
                )
            )
        return decisions
