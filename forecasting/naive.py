"""Seasonal baselines: tomorrow looks like the same hour of the last season (or of the last few)."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd

from forecasting.base import Forecaster, PointForecast, future_index, normal_half_width
from forecasting.history import clean_history


class SeasonalMean(Forecaster):
    """The mean of the last ``seasons`` seasons at each phase of the season.

    Averaging several seasons trades reaction speed for noise: with counts as noisy as cell
    traffic, the mean daily profile of the last week beats yesterday alone. Intervals come from
    the spread of the same rule's in-sample errors. Histories shorter than two seasons fall back
    to the naive (last value) forecast and say so in the note.
    """

    name = "seasonal_mean"

    def __init__(self, season_length: int = 24, seasons: int = 7) -> None:
        self.season_length = season_length
        self.seasons = seasons

    def fit(self, y: pd.Series) -> Self:
        clean, note = clean_history(y)
        values = clean.to_numpy()
        notes = [note] if note else []
        self.season_ = self.season_length if len(values) >= 2 * self.season_length else 1
        if self.season_ != self.season_length:
            notes.append(f"history of {len(values)} points is shorter than two seasons: naive forecast")
        m = self.season_
        k = max(1, min(self.seasons, len(values) // m - 1 if m > 1 else self.seasons, len(values) // m))
        self.seasons_used_ = k
        self.profile_ = values[len(values) - k * m :].reshape(k, m).mean(axis=0)
        self.scale_ = _rule_error_scale(values, m, k)
        self.note_ = "; ".join(notes)
        self.y_ = clean
        return self

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        m, k = self.season_, self.seasons_used_
        mean = np.tile(self.profile_, int(np.ceil(horizon / m)))[:horizon]
        seasons_ahead = np.arange(horizon) // m + 1
        half = normal_half_width(self.scale_, level) * np.sqrt(1 + (seasons_ahead - 1) / k)
        return PointForecast(future_index(self.y_, horizon), mean, mean - half, mean + half, level, self.name, self.note_)


class SeasonalNaive(SeasonalMean):
    """Repeat the last ``season_length`` values; intervals widen with every season ahead."""

    name = "seasonal_naive"
    seasons = 1

    def __init__(self, season_length: int = 24) -> None:
        self.season_length = season_length


def _rule_error_scale(values: np.ndarray, m: int, k: int) -> float:
    """Standard deviation of the one-season-ahead errors of the k-season mean, in sample."""
    n = len(values)
    if n <= k * m + 1:
        return float(np.std(np.diff(values))) if n > 2 else 0.0
    target = values[k * m :]
    fitted = np.mean([values[k * m - j * m : n - j * m] for j in range(1, k + 1)], axis=0)
    return float(np.std(target - fitted))
