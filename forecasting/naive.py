"""Seasonal naive: tomorrow looks like the same hour of the last season."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
from scipy import stats

from forecasting.base import Forecaster, PointForecast, future_index


class SeasonalNaive(Forecaster):
    """Repeat the last ``season_length`` values; intervals from the seasonal-difference spread.

    Shorter histories fall back to the naive (last value) forecast and say so in ``note``.
    """

    name = "seasonal_naive"

    def __init__(self, season_length: int = 24) -> None:
        self.season_length = season_length

    def fit(self, y: pd.Series) -> Self:
        values = y.astype(float).interpolate(limit_direction="both").to_numpy()
        if len(values) == 0 or np.isnan(values).all():
            raise ValueError("cannot fit a forecaster on an empty or all-missing series")
        self.season_ = self.season_length if len(values) >= 2 * self.season_length else 1
        self.note_ = "" if self.season_ == self.season_length else (
            f"history of {len(values)} points is shorter than two seasons: naive forecast"
        )
        self.last_season_ = values[-self.season_ :]
        diffs = values[self.season_ :] - values[: -self.season_] if len(values) > self.season_ else np.zeros(1)
        self.scale_ = float(np.std(diffs)) if len(diffs) > 1 else 0.0
        self.y_ = y
        return self

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        reps = int(np.ceil(horizon / self.season_))
        mean = np.tile(self.last_season_, reps)[:horizon]
        k = np.floor(np.arange(horizon) / self.season_) + 1  # seasons ahead
        half = stats.norm.ppf(0.5 + level / 2) * self.scale_ * np.sqrt(k)
        return PointForecast(
            future_index(self.y_, horizon), mean, mean - half, mean + half, level, self.name, self.note_
        )
