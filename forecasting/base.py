"""The one estimator interface every forecaster implements.

Forecasters follow scikit-learn's shape (they are :class:`~sklearn.base.BaseEstimator` s, so
``get_params``, ``clone`` and ``repr`` work): parameters in ``__init__``, no work in the
constructor, ``fit(y)`` on one regularly spaced series, ``predict(horizon, level)``. Many series
go through :meth:`Forecaster.forecast_many`, which global models override to learn across all of
them at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Self

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, clone

from forecasting.history import regular_grid


@dataclass(frozen=True)
class PointForecast:
    """Point forecasts and a central prediction interval at ``level`` for each future step."""

    index: pd.DatetimeIndex
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    model: str
    note: str = ""

    def with_note(self, note: str) -> PointForecast:
        """The same forecast with ``note`` appended (notes say why a model fell back)."""
        return replace(self, note="; ".join(n for n in (self.note, note) if n))


class Forecaster(BaseEstimator, ABC):
    """Fit on a regularly spaced series with a DatetimeIndex, then forecast ``horizon`` steps."""

    name: str = "forecaster"

    @abstractmethod
    def fit(self, y: pd.Series) -> Self: ...

    @abstractmethod
    def predict(self, horizon: int, level: float = 0.9) -> PointForecast: ...

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        """Forecast every column of a wide frame; by default one fresh copy of this model per series."""
        return {str(c): clone(self).fit(frame[c]).predict(horizon, level) for c in frame.columns}

    #: whether :meth:`update` advances the fitted state without refitting (otherwise it refits)
    incremental: bool = False

    #: whether one fit learns across all series at once (seconds, not milliseconds): backtests and
    #: services refit such models on a slower schedule of their own
    global_model: bool = False

    def update(self, new_points: pd.Series) -> Self:
        """Take in the points that followed the fitted history and return the model, ready to predict.

        Models with ``incremental = True`` advance their state by the new points only; this default
        refits on the fitted history plus the new points (every model keeps its history as ``y_``).
        """
        history = getattr(self, "y_", None)
        if history is None:
            raise ValueError(f"{type(self).__name__} must be fitted before update()")
        return self.fit(pd.concat([history, new_points]))

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> ManyFitted:
        """Fit every column of ``frame`` for later ``update`` / ``predict_many`` (``horizon``: a hint for
        direct models); by default one fresh copy of this model per series."""
        return PerSeries({str(c): clone(self).fit(frame[c]) for c in frame.columns})


class ManyFitted(ABC):
    """Models fitted on many series: advance them with new rows, forecast them all."""

    @abstractmethod
    def update(self, new_points: pd.DataFrame) -> ManyFitted: ...

    @abstractmethod
    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]: ...


class PerSeries(ManyFitted):
    """One fitted model per series, each updated with its own column."""

    def __init__(self, models: dict[str, Forecaster]) -> None:
        self.models = models

    def update(self, new_points: pd.DataFrame) -> PerSeries:
        for column, model in self.models.items():
            model.update(new_points[column])
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        return {column: model.predict(horizon, level) for column, model in self.models.items()}


class VectorForecaster(Forecaster, ManyFitted):
    """A forecaster whose state is arrays over many series at once: ``fit_many`` / ``update`` / ``predict_many``.

    ``fit(y)`` on one series is the one-column case; :meth:`update` takes the points that came
    after the fitted history (a Series for a one-series fit, a frame with the same columns for
    ``fit_many``). ``forecast_many`` fits all columns in one vectorised pass. Subclasses supply the
    maths as array functions: ``_fit_values`` and ``_update_values`` on (time, series) arrays, and
    ``_mean_sd`` (series, horizon) for the forecast and its standard deviation (normal intervals),
    or ``_mean_bounds`` for the forecast and interval bounds of their own (empirical quantiles).
    """

    incremental = True

    def fit(self, y: pd.Series) -> Self:
        return self.fit_many(y.to_frame(name=y.name if y.name is not None else "y"))

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return next(iter(self.predict_many(horizon, level).values()))

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        return clone(self).fit_many(frame, horizon).predict_many(horizon, level)

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> Self:
        if len(frame.index) < 2:
            raise ValueError("a series needs at least two points to infer its step")
        frame = regular_grid(frame)  # rows that never arrived become missing points
        index = pd.DatetimeIndex(frame.index)
        values = frame.to_numpy(dtype=float)
        if not np.isfinite(values).any(axis=0).all():
            raise ValueError("cannot fit a forecaster on an empty or all-missing series")
        self.columns_ = [str(c) for c in frame.columns]
        self.step_ = index[-1] - index[-2]
        self.last_time_ = index[-1]
        self.n_seen_ = len(index)
        self._fit_values(values)
        return self

    def update(self, new_points: pd.Series | pd.DataFrame) -> Self:
        """Advance the fitted state by the points after the fitted history, without re-estimating."""
        frame = new_points.to_frame(name=self.columns_[0]) if isinstance(new_points, pd.Series) else new_points
        if len(frame) == 0:
            return self
        index = pd.DatetimeIndex(frame.index)
        if index[0] <= self.last_time_:
            raise ValueError(f"update points must follow the fitted history (last {self.last_time_}), got {index[0]}")
        if [str(c) for c in frame.columns] != self.columns_:
            raise ValueError("update points must have the fitted series as columns, in the same order")
        grid = pd.date_range(self.last_time_ + self.step_, index[-1], freq=self.step_)
        values = frame.reindex(grid).to_numpy(dtype=float) if len(grid) != len(index) else frame.to_numpy(dtype=float)
        self._update_values(values)
        self.last_time_ = grid[-1]
        self.n_seen_ += len(grid)
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        mean, lower, upper = self._mean_bounds(horizon, level)
        index = pd.date_range(self.last_time_ + self.step_, periods=horizon, freq=self.step_)
        return {
            c: PointForecast(index, mean[i], lower[i], upper[i], level, self.name, self._note(i))
            for i, c in enumerate(self.columns_)
        }

    def _mean_bounds(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast, lower and upper bounds (series, horizon): a normal interval around ``_mean_sd``."""
        mean, sd = self._mean_sd(horizon)
        half = normal_half_width(np.nan_to_num(sd), level)
        return mean, mean - half, mean + half

    def _note(self, i: int) -> str:
        return ""

    @abstractmethod
    def _fit_values(self, values: np.ndarray) -> None: ...

    @abstractmethod
    def _update_values(self, values: np.ndarray) -> None: ...

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Forecast and its standard deviation (series, horizon); models that override
        ``_mean_bounds`` need not supply it."""
        raise NotImplementedError(f"{type(self).__name__} supplies neither _mean_sd nor _mean_bounds")


def future_index(y: pd.Series | pd.DataFrame, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps that follow ``y`` at its own frequency."""
    if not isinstance(y.index, pd.DatetimeIndex) or len(y.index) < 2:
        raise ValueError("a series needs a DatetimeIndex with at least two points to infer its step")
    step = y.index[-1] - y.index[-2]
    return pd.date_range(y.index[-1] + step, periods=horizon, freq=step)


def steps_per(period: pd.Timedelta, step: pd.Timedelta) -> int:
    """How many sampling steps make one ``period`` (a day, a week), at least 1."""
    return max(1, round(period / step))


def normal_half_width(scale: float | np.ndarray, level: float) -> np.ndarray:
    """Half-width of a central normal interval at ``level`` for standard deviation ``scale``."""
    return np.asarray(stats.norm.ppf(0.5 + level / 2) * np.asarray(scale))
