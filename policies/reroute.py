"""Congestion rerouting: move a link's movable traffic onto its alternative path before a
forecast peak overloads the link.

The operator declares, per link, the path that avoids it (``paths``, node ids as the OpenFlow and
ONOS adapters read them) and which traffic may move (``match``, else the link's traffic in
``controller.targets``). When the upper bound of a link's forecast exceeds ``share`` of its
capacity, the policy decides a ``reroute`` of that traffic over the alternative; once the
forecast falls back, it decides nothing and the reroute lapses with its TTL.
"""

from __future__ import annotations

from nm_toolkit.schemas import Decision, Reroute, split_series_key
from policies.base import Policy, PolicyContext


class CongestionReroutePolicy(Policy):
    """One Reroute per link whose forecast peak would fill more than ``share`` of its capacity."""

    name = "congestion_reroute"

    def __init__(
        self,
        paths: dict[str, list[str]] | None = None,
        match: dict[str, dict[str, str | int]] | None = None,
        share: float = 0.9,
        metric: str | None = None,
    ) -> None:
        """``paths``: link -> the alternative path (at least two nodes); ``match``: link -> the
        traffic that may move (default: the link's ``controller.targets`` entry); ``metric``: the
        series that measures the link (default: any series of the link)."""
        self.paths = paths
        self.match = match
        self.share = share
        self.metric = metric

    def decide(self, context: PolicyContext) -> list[Decision]:
        decisions: list[Decision] = []
        peaks: dict[str, float] = {}
        for series_id, forecast in context.forecasts.items():
            link, metric = split_series_key(series_id)
            if link in (self.paths or {}) and (self.metric is None or metric == self.metric):
                peaks[link] = max(peaks.get(link, 0.0), max(forecast.upper or forecast.mean))
        for link, peak in sorted(peaks.items()):
            capacity = context.capacity_of(link)
            if peak <= self.share * capacity:
                continue
            path = (self.paths or {})[link]
            decisions.append(
                Reroute(
                    **self.stamp(context, link),
                    target=link,
                    path=path,
                    match=(self.match or {}).get(link, context.targets.get(link, {})),
                    reason=f"forecast peak {peak:,.1f} on {link} exceeds {self.share:.0%} of its capacity {capacity:,.1f}: via {' -> '.join(path)}",
                )
            )
        return decisions
