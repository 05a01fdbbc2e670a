"""The one estimator interface every forecaster implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd


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


class Forecaster(ABC):
    """Fit on a regularly spaced series with a DatetimeIndex, then forecast ``horizon`` steps."""

    name: str = "forecaster"

    @abstractmethod
    def fit(self, y: pd.Series) -> Self: ...

    @abstractmethod
    def predict(self, horizon: int, level: float = 0.9) -> PointForecast: ...


def future_index(y: pd.Series, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps that follow ``y`` at its own frequency."""
    if not isinstance(y.index, pd.DatetimeIndex) or len(y.index) < 2:
        raise ValueError("a series needs a DatetimeIndex with at least two points to infer its step")
    step = y.index[-1] - y.index[-2]
    return pd.date_range(y.index[-1] + step, periods=horizon, freq=step)
