"""The forecasting service: series windows in, forecasts out, on a schedule, over any bus.

A stream service on :mod:`nm_toolkit.bus.runtime`: it consumes
:class:`~nm_toolkit.schemas.SeriesPoint` records from ``topics.series`` and writes each window's
value (``forecast.value``: sum by default) to the forecast store; the runtime commits the offsets
after that, so a crash replays windows rather than losing them (replays overwrite the same
window). Points it cannot use (not a SeriesPoint, non-finite values, an implausible window start)
go to ``forecast_service.dead_letter_topic`` whole, with the reason and origin in headers. Every
``interval_seconds`` it forecasts every series with enough history, with one model fitted per
sampling step across all of them (global models learn across all of them; missing windows of event
counts such as intent demand are zeros, ``forecast.zero_fill_metrics``): refit on the stored history
every ``refit_every_rounds`` rounds, advanced by the windows that arrived since the last round in
between (see :meth:`ForecastService.forecast_round`). It publishes :class:`~nm_toolkit.schemas.Forecast` records to
``topics.forecasts`` keyed by series id, stores them, and applies retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import pandas as pd

from forecasting.registry import make_model
from forecasting.store import ForecastStore, default_store_path
from nm_toolkit.bus import Bus, Message
from nm_toolkit.bus.runtime import Emitter, Progress, Rejected, StreamService, Topic
from nm_toolkit.config import ForecastServiceSettings, ForecastSettings, Settings
from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import Forecast, SeriesPoint, split_series_key

if TYPE_CHECKING:
    from forecasting.base import ManyFitted, PointForecast

log = logging.getLogger(__name__)


@dataclass
class ForecastServiceStats:
    """Counters that account for every message consumed and every forecast made."""

    messages: int = 0
    points: int = 0
    rounds: int = 0
    refits: int = 0
    forecasts: int = 0
    skipped_series: int = 0


@dataclass
class _Fitted:
    """The model fitted on one sampling step's series, and the last window it has taken in."""

    model: ManyFitted
    columns: list[str]
    last: pd.Timestamp


def point_value(point: SeriesPoint, value: str) -> float:
    """The window aggregate a series is made of: ``sum`` (counts), ``mean`` (gauges) or ``max``."""
    return point.mean if value == "mean" else float(getattr(point, value))


def forecast_message(series_id: str, fc: PointForecast, issued: datetime, step_seconds: int) -> Forecast:
    """A model's forecast of ``series_id`` as the message the forecasting service publishes."""
    return Forecast(
        series_id=series_id, model=fc.model, issued_at=issued, step_seconds=step_seconds,
        start=fc.index[0].to_pydatetime(), mean=fc.mean.round(4).tolist(),
        lower=fc.lower.round(4).tolist(), upper=fc.upper.round(4).tolist(), level=fc.level, note=fc.note,
    )  # fmt: skip


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


def fill_event_gaps(frame: pd.DataFrame, zero_fill_metrics: Sequence[str], started: bool | None) -> pd.DataFrame:
    """Missing windows of event-count series (:func:`missing_means_zero`) are zeros once the series
    has started: ``started`` None reads that from the frame itself, True says every row is after it."""
    columns = [c for c in frame.columns if missing_means_zero(str(c), zero_fill_metrics)]
    if columns:
        block = frame[columns]
        after_start = block.notna().cummax() if started is None else started
        frame[columns] = block.mask(block.isna() & after_start, 0.0)
    return frame


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
        settings: Settings | None = None,
    ) -> None:
        self.config = config
        self.settings = settings  # where an LLM model finds the edge model (default: the settings file)
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
        self._fitted: dict[int, _Fitted] = {}  # by sampling step in seconds; empty: the next round refits
        self._skipped: dict[str, str] = {}
        self._rounds_since_refit = 0
        # an unknown model name fails here, not hours later
        self._incremental = make_model(config.model, pd.Timedelta(hours=1), settings).incremental

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
        """Forecast every series with enough history; publish, store, prune. Return what was made.

        Every ``refit_every_rounds`` rounds (and on the first round after a start, when a series
        becomes forecastable, or always for models without incremental updates) the models are
        refit on the stored history and the retention applied; in between, the fitted models take in
        the windows stored since the last round (:meth:`ForecastStore.points_since`), so a round
        costs the new windows, not the history. Windows that arrive for a time already taken in are
        seen at the next refit.
        """
        issued = now or datetime.now(UTC)
        cfg = self.forecast
        predicted = None
        if self._fitted and self._rounds_since_refit < self.config.refit_every_rounds:
            predicted = self._update_round()
        refit = predicted is None
        if refit:
            predicted = self._refit_round()
        forecasts = [
            forecast_message(series_id, fc, issued, step)
            for step, fitted in predicted.items()
            for series_id, fc in fitted.model.predict_many(cfg.horizon, cfg.level).items()
        ]  # fmt: skip
        for forecast in forecasts:
            out.send(self.forecasts_topic, forecast, forecast.series_id)
        self.store.put_forecasts(forecasts)
        if refit:
            self.store.prune(issued, timedelta(days=self.config.retention_days), cfg.max_history)
        self._rounds_since_refit = 1 if refit else self._rounds_since_refit + 1
        self.counters.rounds += 1
        self.counters.refits += refit
        self.counters.forecasts += len(forecasts)
        self.counters.skipped_series += len(self._skipped)
        return forecasts, dict(self._skipped)

    def _refit_round(self) -> dict[int, _Fitted]:
        """Fit the model on every forecastable series' stored history, one fit per sampling step."""
        cfg = self.forecast
        by_step: dict[int, list[pd.Series]] = {}
        self._skipped = {}
        for series_id in self.store.series_ids():
            y = self.store.history(series_id, last=cfg.max_history)
            if y.count() < cfg.min_history:
                self._skipped[series_id] = f"{y.count()} windows of history, {cfg.min_history} needed"
                continue
            step = int((y.index[1] - y.index[0]).total_seconds())
            by_step.setdefault(step, []).append(y)
        self._fitted = {}
        for step, columns in by_step.items():
            frame = fill_event_gaps(pd.concat(columns, axis=1, sort=True), self.forecast.zero_fill_metrics, started=None)
            model = make_model(self.config.model, pd.Timedelta(seconds=step), self.settings)
            self._fitted[step] = _Fitted(model.fit_many(frame, cfg.horizon), list(frame.columns), frame.index[-1])
        return self._fitted

    def _update_round(self) -> dict[int, _Fitted] | None:
        """Advance the fitted models by the windows stored since they last read; None when a refit is
        due instead (the model cannot update, or a series not fitted yet now has enough history)."""
        if not self._incremental:
            return None
        since = min(fitted.last for fitted in self._fitted.values())
        new = self.store.points_since(since.to_pydatetime())
        fitted_ids = {c for fitted in self._fitted.values() for c in fitted.columns}
        for series_id in set(new["series_id"]) - fitted_ids:
            count = self.store.history(series_id, last=self.forecast.max_history).count()
            if count >= self.forecast.min_history:
                return None
            self._skipped[series_id] = f"{count} windows of history, {self.forecast.min_history} needed"
        for step, fitted in self._fitted.items():
            rows = new[(new["step_seconds"] == step) & (new["window_start"] > fitted.last) & new["series_id"].isin(fitted.columns)]
            if rows.empty:
                continue
            wide = rows.pivot(index="window_start", columns="series_id", values="value")
            grid = pd.date_range(fitted.last + pd.Timedelta(seconds=step), wide.index[-1], freq=f"{step}s")
            wide = fill_event_gaps(wide.reindex(index=grid, columns=fitted.columns), self.forecast.zero_fill_metrics, started=True)
            fitted.model.update(wide)
            fitted.last = grid[-1]
        return self._fitted

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
        settings=settings,
    )
