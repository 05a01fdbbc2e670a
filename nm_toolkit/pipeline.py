"""The closed loop: telemetry -> collector -> series -> forecasts -> policies -> decisions.

Every hop goes over the bus, through the same topics a distributed deployment uses, so each stage
can equally run as its own service against Kafka. :class:`ClosedLoop` drives them step by step in
one process, which is what ``nmt demo`` and ``nmt run`` do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pandas as pd

from collectors.service import TelemetryCollector
from forecasting import Forecaster, SeasonalNaive
from nm_toolkit.bus import Bus
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter
from nm_toolkit.controller.service import DecisionController, RoundReport
from nm_toolkit.controller.topic import DecisionTopicAdapter
from nm_toolkit.schemas import Decision, DecisionAdapter, Forecast, SeriesPoint
from policies import Policy, load_policies

log = logging.getLogger(__name__)


class SeriesHistory:
    """The recent windows of every series, deduplicated by window start (re-emitted windows
    replace the earlier copy), bounded to ``max_points`` per series."""

    def __init__(self, value: str = "sum", max_points: int = 1344) -> None:
        self.value = value
        self.max_points = max_points
        self._points: dict[str, dict[datetime, float]] = {}
        self._step: dict[str, int] = {}

    def add(self, point: SeriesPoint) -> None:
        value = point.mean if self.value == "mean" else getattr(point, self.value)
        points = self._points.setdefault(point.series_id, {})
        points[point.window_start] = value
        self._step[point.series_id] = point.window_seconds
        if len(points) > self.max_points:
            for stale in sorted(points)[: len(points) - self.max_points]:
                del points[stale]

    def series_ids(self) -> list[str]:
        return sorted(self._points)

    def series(self, series_id: str) -> pd.Series:
        """The series on a regular grid; windows that never arrived are NaN."""
        points = self._points[series_id]
        raw = pd.Series(points, dtype=float).sort_index()
        grid = pd.date_range(raw.index[0], raw.index[-1], freq=pd.Timedelta(seconds=self._step[series_id]))
        return raw.reindex(grid)


@dataclass
class LoopReport:
    """What one pass of the loop did, for people (a table) and scripts (JSON)."""

    collector: dict[str, int]
    series: int = 0
    forecasts: list[Forecast] = field(default_factory=list)
    skipped_series: dict[str, str] = field(default_factory=dict)
    round: RoundReport = field(default_factory=RoundReport)

    @property
    def decisions(self) -> list[Decision]:
        """The decisions that passed the guardrails."""
        return list(self.round.guardrails.accepted)


class ClosedLoop:
    """Runs collector, forecasting and policies over ``bus`` with ``settings``.

    Decisions go through :class:`~nm_toolkit.controller.service.DecisionController`: guardrails
    first, then every adapter in ``adapters`` (an SDN controller, say) and the decisions topic.
    """

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        forecaster: Callable[[], Forecaster] | None = None,
        policies: list[Policy] | None = None,
        capacities: dict[str, float] | None = None,
        adapters: list[ControllerAdapter] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.make_forecaster = forecaster or (lambda: SeasonalNaive(settings.forecast.season_length))
        if policies is None:
            policies = load_policies(settings.policy.enabled, settings.controller.policy_params)
        self.collector = TelemetryCollector(bus, settings)
        self.history = SeriesHistory(settings.forecast.value, settings.forecast.max_history)
        topics = settings.topics
        bus.create_topics([topics.forecasts, topics.decisions])
        self._series = bus.consumer([topics.series], f"{settings.collector.group_id}-loop")
        self._producer = bus.producer()
        self.controller = DecisionController(
            settings,
            policies,
            [*(adapters or []), DecisionTopicAdapter(self._producer, topics.decisions)],
            {**settings.policy.capacities, **(capacities or {})},
        )

    def collect(self, idle_s: float = 1.0, close_windows: bool = False) -> int:
        """Consume telemetry until none arrives for ``idle_s``; optionally close open windows."""
        applied = 0
        while n := self.collector.step(timeout_s=idle_s):
            applied += n
        if close_windows:
            self.collector.close_all_windows()
        return applied

    def _read_series(self) -> None:
        while messages := self._series.poll(10_000, 0.05):
            for message in messages:
                self.history.add(SeriesPoint.model_validate_json(message.value))
            self._series.commit({m.topic_partition: m.offset + 1 for m in messages})

    def forecast(self, now: datetime | None = None) -> tuple[list[Forecast], dict[str, str]]:
        """Forecast every series with enough history; publish to the forecasts topic."""
        self._read_series()
        cfg = self.settings.forecast
        issued = now or datetime.now(UTC)
        forecasts, skipped = [], {}
        for series_id in self.history.series_ids():
            y = self.history.series(series_id)
            if y.count() < cfg.min_history:
                skipped[series_id] = f"{y.count()} windows of history, {cfg.min_history} needed"
                continue
            result = self.make_forecaster().fit(y).predict(cfg.horizon, cfg.level)
            forecast = Forecast(
                series_id=series_id,
                model=result.model,
                issued_at=issued,
                step_seconds=int((y.index[1] - y.index[0]).total_seconds()),
                start=result.index[0].to_pydatetime(),
                mean=result.mean.round(4).tolist(),
                lower=result.lower.round(4).tolist(),
                upper=result.upper.round(4).tolist(),
                level=result.level,
                note=result.note,
            )
            forecasts.append(forecast)
            self._producer.send(self.settings.topics.forecasts, forecast.model_dump_json().encode(), series_id.encode())
        self._producer.flush()
        return forecasts, skipped

    def run_once(self, idle_s: float = 1.0, close_windows: bool = False) -> LoopReport:
        """Collect what is waiting, forecast, decide: one turn of the loop."""
        self.collect(idle_s, close_windows)
        forecasts, skipped = self.forecast()
        round_report = self.controller.decide(forecasts)
        self.controller.expire()
        return LoopReport(
            collector=self.collector.stats_dict(),
            series=len(self.history.series_ids()),
            forecasts=forecasts,
            skipped_series=skipped,
            round=round_report,
        )

    def close(self) -> None:
        self.collector.close()
        self._series.close()
        for adapter in self.controller.adapters:
            adapter.close()
        self._producer.close()


def decisions_json(decisions: list[Decision]) -> list[dict[str, object]]:
    return [orjson.loads(DecisionAdapter.dump_json(d)) for d in decisions]
