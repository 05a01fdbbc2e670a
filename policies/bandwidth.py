"""Forecast-driven bandwidth reservation: reserve ahead of a forecast peak, with headroom."""

from __future__ import annotations

from nm_toolkit.schemas import Decision, Reservation, split_series_key
from policies.base import Policy, PolicyContext


class BandwidthReservationPolicy(Policy):
    """Reserve ``peak * (1 + headroom)`` for every source whose forecast upper bound exceeds
    ``reserve_share`` of its capacity, capped at capacity.

    The upper bound of the interval, not the mean, is what a reservation must cover.
    """

    name = "bandwidth_reservation"

    def decide(self, context: PolicyContext) -> list[Decision]:
        settings = context.settings
        decisions: list[Decision] = []
        for series_id, forecast in sorted(context.forecasts.items()):
            source, _metric = split_series_key(series_id)
            capacity = context.capacity_of(source)
            peak = max(forecast.upper) if forecast.upper else max(forecast.mean)
            if peak <= settings.reserve_share * capacity:
                continue
            bandwidth = min(capacity, peak * (1 + settings.headroom))
            decisions.append(
                Reservation(
                    idempotency_key=f"{self.name}:{source}:{forecast.start.isoformat()}",
                    policy=self.name,
                    target=source,
                    ttl_seconds=settings.decision_ttl_seconds,
                    bandwidth=round(bandwidth, 3),
                    capacity=capacity,
                    forecast_peak=round(peak, 3),
                    reason=(
                        f"{forecast.model} forecast of {series_id} peaks at {peak:,.1f} "
                        f"({peak / capacity:.0%} of capacity {capacity:,.0f}) within {forecast.horizon} steps"
                    ),
                    dry_run=settings.dry_run,
                )
            )
        return decisions
