"""Forecast-driven bandwidth reservation: reserve ahead of a forecast peak, with headroom.

Three policies share the rule. :class:`BandwidthReservationPolicy` reserves for network series
(cells, links); :class:`DemandReservationPolicy` for the bandwidth a cell's users ask for, from
the demand the edge infers from their prompts. :class:`EdgeLinkReservationPolicy` reserves the edge->cloud link of each edge
site for the traffic its LLM service will escalate, forecast from the ``SITE|edge_to_cloud_bytes``
counts the edge service reports about itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import numpy as np

from nm_toolkit.schemas import LLM_LOAD_METRICS, Decision, Forecast, Reservation, split_series_key
from policies.base import Load, Policy, PolicyContext


class BandwidthReservationPolicy(Policy):
    """Reserve ``peak * (1 + headroom)`` for every source whose forecast upper bound exceeds
    ``reserve_share`` of its capacity, capped at capacity.

    The upper bound of the interval, not the mean, is what a reservation must cover.
    ``metric`` restricts it to one metric (say ``throughput_mbps``); ``None`` takes every series
    except the LLM services' reports about their own load (:data:`LLM_LOAD_METRICS`), which are
    not link traffic.
    """

    name = "bandwidth_reservation"

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric

    def covers(self, series_id: str) -> bool:
        """Whether this policy reserves for ``series_id``'s source (what a backtest scores it on)."""
        metric = split_series_key(series_id)[1]
        if self.metric is not None:
            return metric == self.metric
        return not any(fnmatchcase(metric, pattern) for pattern in LLM_LOAD_METRICS)

    def target_of(self, source: str) -> str:
        """The target a reservation for ``source``'s series is made on."""
        return source

    def units_per_value(self, step_seconds: float) -> float:
        """Bandwidth units per unit of the series' values at ``step_seconds`` (the series is the rate itself)."""
        return 1.0

    def peak_of(self, peaks: Mapping[str, Load]) -> Load:
        """A target's demand from its covered series' values (peaks, or arrays step by step): the
        busiest series (two metrics of one cell measure the same traffic, they do not add up)."""
        return functools.reduce(np.maximum, peaks.values())

    def decide(self, context: PolicyContext) -> list[Decision]:
        settings = context.settings
        by_target: dict[str, dict[str, Forecast]] = {}
        for series_id, forecast in sorted(context.forecasts.items()):
            if self.covers(series_id):
                by_target.setdefault(self.target_of(split_series_key(series_id)[0]), {})[series_id] = forecast
        decisions: list[Decision] = []
        for target, forecasts in sorted(by_target.items()):
            capacity = context.capacity_of(target)
            peaks = {s: self.units_per_value(f.step_seconds) * max(f.upper or f.mean) for s, f in forecasts.items()}
            peak = float(self.peak_of(peaks))
            if peak <= settings.reserve_share * capacity:
                continue
            # Round down: rounding up a reservation capped at capacity would exceed capacity.
            bandwidth = math.floor(min(capacity, peak * (1 + settings.headroom)) * 1000) / 1000
            busiest = max(peaks, key=peaks.__getitem__)
            forecast = forecasts[busiest]
            covered = busiest if len(peaks) == 1 else f"{busiest} and {len(peaks) - 1} more"
            decisions.append(
                Reservation(
                    **self.stamp(context, target, forecast.start.isoformat()),
                    target=target,
                    bandwidth=bandwidth,
                    capacity=capacity,
                    forecast_peak=round(peak, 3),
                    series_id=busiest,
                    reason=(
                        f"{forecast.model} forecast of {covered} peaks at {peak:,.1f} "
                        f"({peak / capacity:.0%} of capacity {capacity:,.0f}) within {forecast.horizon} steps"
                    ),
                )
            )
        return decisions


class DemandReservationPolicy(BandwidthReservationPolicy):
    """Reserve a cell's bandwidth for what its users ask for: the edge windows every prompt's
    service intent into ``CELL|demand.<class>.mbps`` (the Mbit/s each request needs: its class's
    typical need, or the rate the user named), and a cell's forecast peaks add up over its classes.

    Each request is taken to hold its rate for its whole window, so this is an upper bound of the
    concurrent need: raise ``reserve_share`` or shorten ``intent.window_seconds`` where sessions are
    short. A cell with a traffic reservation as well keeps the one in force (the guardrails' tie rule).
    """

    name = "demand_reservation"

    def __init__(self, metrics: Sequence[str] = ("demand.*.mbps",)) -> None:
        self.metrics = metrics

    def covers(self, series_id: str) -> bool:
        metric = split_series_key(series_id)[1]
        return any(fnmatchcase(metric, pattern) for pattern in self.metrics)

    def peak_of(self, peaks: Mapping[str, Load]) -> Load:
        """The classes' requests share the cell: their needs add up."""
        return functools.reduce(np.add, peaks.values())


class EdgeLinkReservationPolicy(BandwidthReservationPolicy):
    """Reserve each edge site's link to the cloud (target ``<site><link_suffix>``, its capacity
    under ``policy.capacities``) for the forecast peak of the bytes its edge service escalates.

    The edge service counts the bytes of every request it sends to the cloud
    (``SITE|edge_to_cloud_bytes``, a count per window); the reservation is a rate in the
    controller's bandwidth unit (``unit_kbps``: kbit/s per unit, as
    ``controller.bandwidth_unit_kbps``; 1000 = Mbit/s).
    """

    name = "edge_link_reservation"

    def __init__(self, metrics: Sequence[str] = ("edge_to_cloud_bytes",), link_suffix: str = ">cloud", unit_kbps: float = 1000.0) -> None:
        self.metrics = metrics
        self.link_suffix = link_suffix
        self.unit_kbps = unit_kbps

    def covers(self, series_id: str) -> bool:
        return split_series_key(series_id)[1] in self.metrics

    def target_of(self, source: str) -> str:
        return f"{source}{self.link_suffix}"

    def units_per_value(self, step_seconds: float) -> float:
        """Bytes per window -> the bandwidth unit: 8 bits, per second of the window, per unit's kbit/s."""
        return 8.0 / step_seconds / 1000.0 / self.unit_kbps
