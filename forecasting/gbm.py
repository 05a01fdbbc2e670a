"""A global gradient-boosting forecaster: one model learnt across every series at once.

Direct multi-horizon: each training row is (series, forecast origin, steps ahead ``h``) with
features computed from the history before the origin only, so the same features exist for every
``h`` at prediction time and nothing is forecast recursively. Each series is divided by its
recent level, so cells with ten or ten thousand events share what they teach the model. The
point model minimises absolute error (the median); intervals come from quantile-loss variants.
Day of week is left out on purpose: the weekly lags carry the weekly shape and, unlike a
calendar feature, they follow a holiday week instead of insisting on the usual one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from forecasting.base import Forecaster, PointForecast, future_index, steps_per
from forecasting.history import DAY, WEEK, infer_step, regular_grid
from forecasting.naive import SeasonalMean

MIN_TRAIN_ROWS = 200
FEATURES = ("h", "hour_of_day", "day_profile", "week_profile", "lag_week", "lag_day", "last_day", "last", "log_level")


@dataclass(frozen=True)
class _Periods:
    day: int
    week: int


def origin_features(
    history: np.ndarray,
    origin: pd.Timestamp,
    step: pd.Timedelta,
    horizon: int,
    max_horizon: int,
    periods: _Periods,
    recent_lags: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every (series, h) for a forecast from ``origin``, and each series' level.

    ``history`` is (series, time) and ends just before ``origin``; it may hold NaN. Returns a
    (series * horizon, features) matrix, rows ordered series-major, and the (series,) levels;
    ``recent_lags`` > 1 appends the values 2..recent_lags steps before the origin (``last`` is 1).
    """
    n, t = history.shape
    d, w = periods.day, periods.week
    with np.errstate(all="ignore"), _quiet_nanmean():
        level = np.nanmean(history[:, -min(w, t) :], axis=1)
        level = np.where(np.isfinite(level) & (level > 0), level, 1.0)
        z = history / level[:, None]
        h = np.arange(1, horizon + 1)
        times = pd.DatetimeIndex(origin + step * (h - 1))
        hour = np.asarray(times.hour + times.minute / 60, dtype=float)
        day_phase = t - d + (h - 1) % d
        days = min(7, t // d)
        day_profile = np.nanmean(z[:, t - days * d :].reshape(n, days, d), axis=1)[:, (h - 1) % d] if days else _nan(n, horizon)
        weeks = min(4, t // w)
        week_profile = np.nanmean(z[:, t - weeks * w :].reshape(n, weeks, w), axis=1)[:, (h - 1) % w] if weeks else _nan(n, horizon)
        lag_week = z[:, t - w + (h - 1) % w] if t >= w else _nan(n, horizon)
        lag_day = z[:, day_phase] if t >= d else _nan(n, horizon)
        last_day = np.nanmean(z[:, -min(d, t) :], axis=1)
        columns = [
            np.minimum(h, max_horizon),
            hour,
            day_profile,
            week_profile,
            lag_week,
            lag_day,
            last_day[:, None],
            z[:, -1][:, None],
            np.log(level)[:, None],
            *(z[:, t - j][:, None] if t >= j else _nan(n, 1) for j in range(2, recent_lags + 1)),
        ]
    matrix = np.stack([np.broadcast_to(c, (n, horizon)) for c in columns], axis=-1)
    return matrix.reshape(n * horizon, len(columns)), level


def _nan(n: int, horizon: int) -> np.ndarray:
    return np.full((n, horizon), np.nan)


class _quiet_nanmean:
    """``np.nanmean`` of an all-NaN slice warns; here that is expected and yields NaN."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


class GlobalGBM(Forecaster):
    """HistGradientBoosting on lags, rolling profiles and the hour of day, across all series.

    ``max_horizon`` is how many steps ahead the direct model is trained for; beyond it the
    steps-ahead feature is held at its last value. ``None`` means the requested horizon in
    :meth:`forecast_many` and one day in :meth:`fit`. Training origins are spaced
    ``min(day, max_horizon)`` steps apart over the last ``history_days`` days, at most
    ``max_origins`` of them (short horizons on fine data would otherwise give hundreds); at most
    ``max_train_rows`` rows (sampled) train each model. Series with less than a day of history
    fall back to :class:`~forecasting.naive.SeasonalMean` and say so. ``n_threads`` caps the
    OpenMP threads of the boosting (None: all cores). ``recent_lags`` > 1 adds the last
    ``recent_lags`` values as features (minutes, on 5-minute telemetry): what a short horizon needs
    and a day-ahead one does not, so off by default.
    """

    name = "gbm"
    global_model = True
    incremental = True  # update() refreshes the features and keeps the boosters (approximate, see update)

    def __init__(
        self,
        max_horizon: int | None = None,
        history_days: float = 14.0,
        max_train_rows: int = 100_000,
        max_origins: int = 48,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        quantile_max_iter: int = 100,
        random_state: int = 0,
        n_threads: int | None = 1,
        recent_lags: int = 0,
    ) -> None:
        self.max_horizon = max_horizon
        self.history_days = history_days
        self.max_train_rows = max_train_rows
        self.max_origins = max_origins
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.quantile_max_iter = quantile_max_iter
        self.random_state = random_state
        self.n_threads = n_threads
        self.recent_lags = recent_lags

    # -- one series: a global model over a single column --------------------------------------
    def fit(self, y: pd.Series) -> Self:
        with self._threads():
            return self._fit_frame(y.to_frame(name=y.name if y.name is not None else "y"), self.max_horizon)

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        with self._threads():
            return next(iter(self._predict_frame(horizon, level).values()))

    # -- many series ------------------------------------------------------------------------
    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        with self._threads():
            model = clone(self)._fit_frame(frame, self.max_horizon or horizon)
            return model._predict_frame(horizon, level)

    # -- incremental: new rows refresh the features, the boosters are kept until the next refit ----
    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> Self:
        """Fit on every column of ``frame`` (``horizon``: the direct model's reach when ``max_horizon`` is None)."""
        with self._threads():
            return clone(self)._fit_frame(frame, self.max_horizon or horizon)

    def update(self, new_points: pd.Series | pd.DataFrame) -> Self:
        """Append the rows that followed the fitted history: the next forecast reads its lags and
        profiles from them, with the trained boosters (not exact: a refit would also retrain). Only
        the last four weeks are kept, all the features read, so an update's cost does not grow with
        the history."""
        rows = new_points.to_frame(name=self.frame_.columns[0]) if isinstance(new_points, pd.Series) else new_points
        self.frame_ = regular_grid(pd.concat([self.frame_, rows.astype(float)])).iloc[-4 * self.periods_.week :]
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        with self._threads():
            return self._predict_frame(horizon, level)

    def _threads(self) -> threadpool_limits:
        """Cap the boosting's OpenMP threads: on a shared machine, OpenMP's busy-waiting threads
        made a demo round 20x slower (7.7 min instead of 22 s) than one thread did."""
        return threadpool_limits(limits=self.n_threads, user_api="openmp")

    def _fit_frame(self, frame: pd.DataFrame, max_horizon: int | None) -> Self:
        frame = regular_grid(frame.astype(float))
        index = pd.DatetimeIndex(frame.index)
        self.step_ = infer_step(index)
        self.periods_ = _Periods(steps_per(DAY, self.step_), steps_per(WEEK, self.step_))
        self.max_horizon_ = max_horizon or self.periods_.day
        self.frame_ = frame
        values = frame.to_numpy().T
        recent = values[:, -self.periods_.day :]
        observed = np.isfinite(values).sum(axis=1)
        self.fallback_: dict[str, str] = {}
        for i, column in enumerate(frame.columns):
            if observed[i] <= self.periods_.day or not np.isfinite(recent[i]).any():
                self.fallback_[str(column)] = f"{observed[i]} points, less than a day of recent history: seasonal-mean fallback"
            elif np.nanmax(np.abs(recent[i])) == 0:
                self.fallback_[str(column)] = "the last day is all zeros: seasonal-mean fallback"
        keep = [i for i, c in enumerate(frame.columns) if str(c) not in self.fallback_]
        self.global_columns_ = [str(frame.columns[i]) for i in keep]
        self.X_, self.t_ = self._training_rows(values[keep], index)
        # A feature with no value in any training row (weekly lags on less than a week of history)
        # carries nothing, and an all-missing column breaks the regressor's binning: hold it at 0.
        self.absent_features_ = ~np.isfinite(self.X_).any(axis=0)
        self.X_ = self._without_absent(self.X_)
        self.models_: dict[float, HistGradientBoostingRegressor] = {}
        if len(self.t_) < MIN_TRAIN_ROWS:
            note = f"{len(self.t_)} training rows are too few for the global model: seasonal-mean fallback"
            self.fallback_.update(dict.fromkeys(self.global_columns_, note))
            self.global_columns_ = []
        else:
            self.models_[0.5] = self._regressor(0.5).fit(self.X_, self.t_)
        return self

    def _training_rows(self, values: np.ndarray, index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        d, t_end, hmax = self.periods_.day, values.shape[1], self.max_horizon_
        spacing = max(1, min(d, hmax))
        first = max(d, t_end - hmax)
        count = min(self.max_origins, int(self.history_days * d / spacing))
        origins = [o for o in range(first, first - count * spacing, -spacing) if o >= d and o < t_end]
        xs, ts = [], []
        for o in origins:
            horizon = min(hmax, t_end - o)
            x, level = origin_features(values[:, :o], index[o], self.step_, horizon, hmax, self.periods_, self.recent_lags)
            # A series that had not started by this origin has no level to scale its targets by
            # (its fallback level 1 would make raw values targets: 2e5 bytes among ratios near 1).
            started = np.isfinite(values[:, max(0, o - self.periods_.week) : o]).any(axis=1)
            xs.append(x)
            ts.append(np.where(started[:, None], values[:, o : o + horizon] / level[:, None], np.nan).reshape(-1))
        if not xs:
            return np.empty((0, len(FEATURES) + max(0, self.recent_lags - 1))), np.empty(0)
        x, t = np.concatenate(xs), np.concatenate(ts)
        rows = np.flatnonzero(np.isfinite(t))
        if len(rows) > self.max_train_rows:
            rows = np.sort(np.random.default_rng(self.random_state).choice(rows, self.max_train_rows, replace=False))
        return x[rows], t[rows]

    def _without_absent(self, x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[:, self.absent_features_] = 0.0
        return x

    def _regressor(self, quantile: float) -> HistGradientBoostingRegressor:
        median = quantile == 0.5
        return HistGradientBoostingRegressor(
            loss="absolute_error" if median else "quantile",
            quantile=None if median else quantile,
            max_iter=self.max_iter if median else self.quantile_max_iter,
            learning_rate=self.learning_rate if median else 2 * self.learning_rate,
            early_stopping=False,
            random_state=self.random_state,
        )

    def _quantile_model(self, quantile: float) -> HistGradientBoostingRegressor:
        """Quantile models are trained on first use for a level, then kept."""
        if quantile not in self.models_:
            self.models_[quantile] = self._regressor(quantile).fit(self.X_, self.t_)
        return self.models_[quantile]

    def _predict_frame(self, horizon: int, level: float) -> dict[str, PointForecast]:
        frame = self.frame_
        out: dict[str, PointForecast] = {}
        if self.global_columns_:
            values = frame[self.global_columns_].to_numpy().T
            origin = frame.index[-1] + self.step_
            x, scale = origin_features(values, origin, self.step_, horizon, self.max_horizon_, self.periods_, self.recent_lags)
            x = self._without_absent(x)
            shape = (len(self.global_columns_), horizon)
            mean = self.models_[0.5].predict(x).reshape(shape) * scale[:, None]
            lower = self._quantile_model((1 - level) / 2).predict(x).reshape(shape) * scale[:, None]
            upper = self._quantile_model((1 + level) / 2).predict(x).reshape(shape) * scale[:, None]
            index = future_index(frame, horizon)
            for i, column in enumerate(self.global_columns_):
                out[column] = PointForecast(
                    index, mean[i], np.minimum(lower[i], mean[i]), np.maximum(upper[i], mean[i]), level, self.name
                )
        for column, note in self.fallback_.items():
            out[column] = SeasonalMean(self.periods_.day).fit(frame[column]).predict(horizon, level).with_note(note)
        return {str(c): out[str(c)] for c in frame.columns}
