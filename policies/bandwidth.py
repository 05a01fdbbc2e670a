"""Forecast-driven bandwidth reservation: reserve ahead of a forecast peak, with headroom."""

from __future__ import annotations

import math

from nm_toolkit.schemas import Decision, Reservation, split_series_key
from policies.base import Policy, PolicyContext


class BandwidthReservationPolicy(Policy):
    """Reserve ``peak * (1 + headroom)`` for every source whose forecast upper bound exceeds
    ``reserve_share`` of its capacity, capped at capacity.

    The upper bound of the interval, not the mean, is what a reservation must cover.
    ``metric`` restricts it to one metric (say ``throughput_mbps``); ``None`` takes every series.
    """

    name = "bandwidth_reservation"

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric

    def decide(self, context: PolicyContext) -> list[Decision]:
        settings = context.settings
        decisions: list[Decision] = []
        for series_id, forecast in sorted(context.forecasts.items()):
            source, metric = split_series_key(series_id)
            if self.metric is not None and metric != self.metric:
                continue
            capacity = context.capacity_of(source)
            peak = max(forecast.upper) if forecast.upper else max(forecast.mean)
            if peak <= settings.reserve_share * capacity:
                continue
            # Round down: rounding up a reservation capped at capacity would exceed capacity.
            bandwidth = math.floor(min(capacity, peak * (1 + settings.headroom)) * 1000) / 1000
            decisions.append(
                Reservation(
                    **self.stamp(context, source, forecast.start.isoformat()),
                    target=source,
                    bandwidth=bandwidth,
                    capacity=capacity,
                    forecast_peak=round(peak, 3),
                    reason=(
                        f"{forecast.model} forecast of {series_id} peaks at {peak:,.1f} "
                        f"({peak / capacity:.0%} of capacity {capacity:,.0f}) within {forecast.horizon} steps"
                    ),
                )
            )
        return decisions
