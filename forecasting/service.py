"""The forecasting service: series windows in, forecasts out, on a schedule, over any bus.

A stream service on :mod:`nm_toolkit.bus.runtime`: it consumes
:class:`~nm_toolkit.schemas.SeriesPoint` records from ``topics.series`` and writes each window's
value (``forecast.value``: sum by default) to the forecast store; the runtime commits the offsets
after that, so a crash replays windows rather than losing them (replays overwrite the same
window). Points it cannot use (not a SeriesPoint, non-finite values, an implausible window start)
go to ``forecast_service.dead_letter_topic`` whole, with the reason and origin in headers. Every ``interval_seconds`` it forecasts every series with enough
history in one :meth:`~forecasting.base.Forecaster.forecast_many` call per sampling step (global
models learn across all of them; missing windows of event counts such as intent demand are zeros,
``forecast.zero_fill_metrics``), publishes :class:`~nm_toolkit.schemas.Forecast` records to
``topics.forecasts`` keyed by series id, stores them, and applies retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

import pandas as pd

from forecasting.registry import make_model
from forecasting.store import ForecastStore, default_store_path
from nm_toolkit.bus import Bus, Message
from nm_toolkit.bus.runtime import Emitter, Progress, Rejected, StreamService, Topic
from nm_toolkit.config import ForecastServiceSettings, ForecastSettings, Settings
from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import Forecast, SeriesPoint, split_series_key

log = logging.getLogger(__name__)


@dataclass
class ForecastServiceStats:
    """Counters that account for every message consumed and every forecast made."""

    messages: int = 0
    points: int = 0
    rounds: int = 0
    forecasts: int = 0
    skipped_series: int = 0


def point_value(point: SeriesPoint, value: str) -> float:
    """The window aggregate a series is made of: ``sum`` (counts), ``mean`` (gauges) or ``max``."""
    return point.mean if value == "mean" else float(getattr(point, value))


def missing_means_zero(series_id: str, zero_fill_metrics: Sequence[str]) -> bool:
    """Whether a window of ``series_id`` that never arrived means "no events" rather than "no data".

    An event-count series (requests per hour) only gets a window when something happened, so its
    gaps are zeros; filling them like a telemetry outage (yesterday's value, interpolation) would
    invent demand. A series stored by ``nmt forecast predict`` from a file (a column name, no
    METRIC part) is telemetry, not an event count.
    """
    if "|" not in series_id:
        return False
    metric = split_series_key(series_id)[1]
    return any(fnmatchcase(metric, pattern) for pattern in zero_fill_metrics)


class ForecastService(StreamService):
    """Consume ``series_topic`` in group ``config.group_id``; publish ``forecasts_topic``."""

    name = "forecaster"

    def __init__(
        self,
        config: ForecastServiceSettings,
        forecast: ForecastSettings,
        *,
        series_topic: str,
        forecasts_topic: str,
        store: ForecastStore,
        bounds: EventTimeBounds = EventTimeBounds(),
    ) -> None:
        self.config = config
        self.forecast = forecast
        self.group_id = config.group_id
        self.dead_letter_topic = config.dead_letter_topic
        self.series = Topic(series_topic, SeriesPoint)
        self.inputs = [self.series]
        self.forecasts_topic = forecasts_topic
        self.outputs = [forecasts_topic]
        self.max_poll_records = config.max_poll_records
        self.store = store
        self.bounds = bounds
        self.counters = ForecastServiceStats()
        self._last_round = time.monotonic() - self.config.interval_seconds  # due at once, once caught up
        make_model(config.model, pd.Timedelta(hours=1))  # an unknown model name fails here, not hours later

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Store the windows; dead-letter what is not a usable one."""
        points = []
        for message in messages:
            try:
                point = self._point(message)
            except Rejected as exc:
                out.dead_letter(message, exc.errors)
                continue
            points.append((point.series_id, point.window_start, point.window_seconds, point_value(point, self.forecast.value)))
        self.store.put_points(points)
        self.counters.messages += len(messages)
        self.counters.points += len(points)

    def _point(self, message: Message) -> SeriesPoint:
        point = self.series.decode(message)
        if (reason := self.bounds.reason(point.window_start)) is not None:
            raise Rejected(f"window_start: {reason}")
        return point

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """A forecast round every ``interval_seconds`` once the series topic is read up to its end
        (a poll that brought nothing; at the latest after twice the interval), and one before an
        idle exit."""
        elapsed = time.monotonic() - self._last_round
        interval = self.config.interval_seconds
        if final or (elapsed >= interval and (progress.caught_up or elapsed >= 2 * interval)):
            self._last_round = time.monotonic()
            self.forecast_round(out)
        return False

    def forecast_round(self, out: Emitter, now: datetime | None = None) -> tuple[list[Forecast], dict[str, str]]:
        """Forecast every series with enough history; publish, store, prune. Return what was made."""
        issued = now or datetime.now(UTC)
        cfg = self.forecast
        by_step: dict[int, list[pd.Series]] = {}
        skipped: dict[str, str] = {}
        for series_id in self.store.series_ids():
            y = self.store.history(series_id, last=cfg.max_history)
            if missing_means_zero(series_id, cfg.zero_fill_metrics):
                y = y.fillna(0.0)
            if y.count() < cfg.min_history:
                skipped[series_id] = f"{y.count()} windows of history, {cfg.min_history} needed"
                continue
            step = int((y.index[1] - y.index[0]).total_seconds())
            by_step.setdefault(step, []).append(y)
        forecasts = []
        for step, columns in by_step.items():
            frame = pd.concat(columns, axis=1).sort_index()
            model = make_model(self.config.model, pd.Timedelta(seconds=step))
            for series_id, fc in model.forecast_many(frame, cfg.horizon, cfg.level).items():
                forecasts.append(
                    Forecast(
                        series_id=series_id, model=fc.model, issued_at=issued, step_seconds=step,
                        start=fc.index[0].to_pydatetime(), mean=fc.mean.round(4).tolist(),
                        lower=fc.lower.round(4).tolist(), upper=fc.upper.round(4).tolist(), level=fc.level, note=fc.note,
                    )
                )
        for forecast in forecasts:
            out.send(self.forecasts_topic, forecast, forecast.series_id)
        self.store.put_forecasts(forecasts)
        self.store.prune(issued, timedelta(days=self.config.retention_days), cfg.max_history)
        self.counters.rounds += 1
        self.counters.forecasts += len(forecasts)
        self.counters.skipped_series += len(skipped)
        return forecasts, skipped

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)

    def close(self) -> None:
        self.store.close()


def forecast_service(settings: Settings, bus: Bus) -> ForecastService:
    """The forecasting service the settings describe, with its store (in memory on a bus whose
    messages do not outlive the process)."""
    cfg = settings.forecast_service
    path = cfg.store_path or default_store_path(settings.state_dir)
    return ForecastService(
        cfg,
        settings.forecast,
        series_topic=settings.topics.series,
        forecasts_topic=settings.topics.forecasts,
        store=ForecastStore(path if bus.durable else None),
        bounds=EventTimeBounds.from_settings(settings.collector.min_timestamp, settings.collector.max_future_seconds),
    )
