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


def future_index(y: pd.Series | pd.DataFrame, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps that follow ``y`` at its own frequency."""
    if not isinstance(y.index, pd.DatetimeIndex) or len(y.index) < 2:
        raise ValueError("a series needs a DatetimeIndex with at least two points to infer its step")
    step = y.index[-1] - y.index[-2]
    return pd.date_range(y.index[-1] + step, periods=horizon, freq=step)


def steps_per(period: pd.Timedelta, step: pd.Timedelta) -> int:
    """How many sampling steps make one ``period`` (a day, a week), at least 1."""
    return max(1, int(round(period / step)))


def normal_half_width(scale: float | np.ndarray, level: float) -> np.ndarray:
    """Half-width of a central normal interval at ``level`` for standard deviation ``scale``."""
    return np.asarray(stats.norm.ppf(0.5 + level / 2) * np.asarray(scale))
