"""The forecasting service: series windows in, forecasts out, on a schedule, over any bus.

It consumes :class:`~nm_toolkit.schemas.SeriesPoint` records from ``topics.series``, writes each
window's value (``forecast.value``: sum by default) to the forecast store, and only then commits
the offsets, so a crash replays windows rather than losing them (replays overwrite the same
window). Records it cannot use go to ``forecast_service.dead_letter_topic`` whole, with the
reason and origin in headers. Every ``interval_seconds`` it forecasts every series with enough
history in one :meth:`~forecasting.base.Forecaster.forecast_many` call per sampling step (global
models learn across all of them; missing windows of event counts such as intent demand are zeros,
``forecast.zero_fill_metrics``), publishes :class:`~nm_toolkit.schemas.Forecast` records to
``topics.forecasts`` keyed by series id, stores them, and applies retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

import pandas as pd
from pydantic import ValidationError

from collectors.decode import validation_reason
from collectors.service import DEAD_LETTER_ORIGIN, DEAD_LETTER_REASON, message_origin
from forecasting.registry import make_model
from forecasting.store import ForecastStore, default_store_path
from nm_toolkit.bus import Bus, Message, next_offsets
from nm_toolkit.config import Settings
from nm_toolkit.schemas import Forecast, SeriesPoint, split_series_key

log = logging.getLogger(__name__)


@dataclass
class ForecastServiceStats:
    """Counters that account for every message consumed and every forecast made."""

    messages: int = 0
    points: int = 0
    dead_letters: int = 0
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
    invent demand.
    """
    metric = split_series_key(series_id)[1]
    return any(fnmatchcase(metric, pattern) for pattern in zero_fill_metrics)


class ForecastService:
    """Consume ``topics.series`` in group ``forecast_service.group_id``; publish ``topics.forecasts``."""

    def __init__(self, bus: Bus, settings: Settings, store: ForecastStore | None = None) -> None:
        self.settings = settings
        self._cfg = settings.forecast_service
        self._topics = settings.topics
        self.store = store or ForecastStore(self._cfg.store_path or default_store_path(settings.state_dir))
        self.stats = ForecastServiceStats()
        bus.create_topics([self._topics.series, self._topics.forecasts, self._cfg.dead_letter_topic])
        make_model(self._cfg.model, pd.Timedelta(hours=1))  # an unknown model name fails here, not hours later
        self.consumer = bus.consumer([self._topics.series], self._cfg.group_id, max_poll_records=self._cfg.max_poll_records)
        self.producer = bus.producer()
        self._last_round = float("-inf")

    def step(self, timeout_s: float = 0.5) -> int:
        """Poll once, store the windows, flush dead letters, commit; return the messages polled."""
        messages = self.consumer.poll(self._cfg.max_poll_records, timeout_s)
        if not messages:
            return 0
        points = []
        for message in messages:
            point = self._decode(message)
            if point is not None:
                points.append((point.series_id, point.window_start, point.window_seconds, point_value(point, self.settings.forecast.value)))
        self.store.put_points(points)
        self.producer.flush()
        self.consumer.commit(next_offsets(messages))
        self.stats.messages += len(messages)
        self.stats.points += len(points)
        return len(messages)

    def _decode(self, message: Message) -> SeriesPoint | None:
        try:
            point = SeriesPoint.model_validate_json(message.value)
            if point.window_seconds <= 0 or point.count <= 0:
                raise ValueError("window_seconds and count must be positive")
            return point
        except (ValidationError, ValueError) as exc:
            reason = validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)
            origin = message_origin(message)
            headers = [(DEAD_LETTER_REASON, f"not a SeriesPoint: {reason}".encode()), (DEAD_LETTER_ORIGIN, origin)]
            self.producer.send(self._cfg.dead_letter_topic, message.value, message.key, headers)
            self.stats.dead_letters += 1
            return None

    def forecast_round(self, now: datetime | None = None) -> tuple[list[Forecast], dict[str, str]]:
        """Forecast every series with enough history; publish, store, prune. Return what was made."""
        issued = now or datetime.now(UTC)
        cfg = self.settings.forecast
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
            model = make_model(self._cfg.model, pd.Timedelta(seconds=step))
            for series_id, fc in model.forecast_many(frame, cfg.horizon, cfg.level).items():
                forecasts.append(
                    Forecast(
                        series_id=series_id, model=fc.model, issued_at=issued, step_seconds=step,
                        start=fc.index[0].to_pydatetime(), mean=fc.mean.round(4).tolist(),
                        lower=fc.lower.round(4).tolist(), upper=fc.upper.round(4).tolist(), level=fc.level, note=fc.note,
                    )
                )
        for forecast in forecasts:
            self.producer.send(self._topics.forecasts, forecast.model_dump_json().encode(), forecast.series_id.encode())
        self.producer.flush()
        self.store.put_forecasts(forecasts)
        self.store.prune(issued, timedelta(days=self._cfg.retention_days), cfg.max_history)
        self.stats.rounds += 1
        self.stats.forecasts += len(forecasts)
        self.stats.skipped_series += len(skipped)
        return forecasts, skipped

    def run(self, stop: threading.Event, idle_exit_s: float | None = None) -> ForecastServiceStats:
        """Consume and forecast every ``interval_seconds`` until ``stop`` (or idle for ``idle_exit_s``)."""
        last_work = time.monotonic()
        try:
            while not stop.is_set():
                if self.step():
                    last_work = time.monotonic()
                if time.monotonic() - self._last_round >= self._cfg.interval_seconds:
                    self._last_round = time.monotonic()
                    self.forecast_round()
                if idle_exit_s is not None and time.monotonic() - last_work >= idle_exit_s:
                    self.forecast_round()
                    break
        finally:
            self.close()
        return self.stats

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)

    def close(self) -> None:
        """Leave the group and release the store; offsets were committed after each batch."""
        self.consumer.close()
        self.producer.flush()
        self.producer.close()
        self.store.close()

