"""Seasonal baselines: tomorrow looks like the same hour of the last season (or of the last few).

The maths are pure functions of (time, series) arrays, so a fit or an update handles every series
in one pass. The state is the last few seasons of repaired history and running sums of the rule's
in-sample errors, so :meth:`~forecasting.base.VectorForecaster.update` costs the new points only
and, on complete data, gives exactly the forecast a refit on the same data gives. Missing points
are repaired at a fit as :func:`forecasting.history.clean_history` does (the value a day earlier or
later, else interpolation); an update cannot see later points, so it fills a missing point with the
repaired value a day earlier, else the previous one: with gaps, update and refit forecasts may
differ until the next refit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasting.base import VectorForecaster, steps_per
from forecasting.history import DAY


# -- pure functions ----------------------------------------------------------------------------
def lagged(values: np.ndarray, lag: int, start: int = 0) -> np.ndarray:
    """Rows ``start:`` of ``values`` (time, n) as they were ``lag`` rows earlier (a negative lag: later);
    NaN beyond the first or last row."""
    rows = np.arange(start, len(values)) - lag
    out = values[np.clip(rows, 0, len(values) - 1)]
    out[(rows < 0) | (rows >= len(values))] = np.nan
    return out


def repair_missing(values: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~forecasting.history.clean_history`'s repair for every column of ``values`` (time, n) at once.

    A missing point after a series' first observation takes the value a day earlier, else a day
    later, else linear interpolation (constant beyond the last observation). Points before the
    first observation stay NaN: the series had not started. Returns the repaired array and how many
    points of each series were filled.
    """
    finite = np.isfinite(values)
    started = np.logical_or.accumulate(finite, axis=0)
    missing = started & ~finite
    if not missing.any():
        return values, np.zeros(values.shape[1], dtype=int)
    out = np.where(missing, lagged(values, day), values)
    out = np.where(np.isnan(out) & started, lagged(values, -day), out)
    rows = np.arange(len(values))
    for j in np.flatnonzero((np.isnan(out) & started).any(axis=0)):
        known, gaps = np.isfinite(out[:, j]), started[:, j] & np.isnan(out[:, j])
        out[gaps, j] = np.interp(rows[gaps], rows[known], out[known, j])
    return out, missing.sum(axis=0)


def repair_forward(recent: np.ndarray, new: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill the missing points of ``new`` from what came before only: the value ``day`` rows earlier,
    else the previous one (``recent`` holds at least ``day`` repaired rows). Returns the repaired
    rows and how many points of each series were filled."""
    rows = np.vstack([recent, new])
    start = len(recent)
    for t in np.flatnonzero(np.isnan(new).any(axis=1)) + start:
        earlier = np.where(np.isfinite(rows[t - day]), rows[t - day], rows[t - 1])
        rows[t] = np.where(np.isnan(rows[t]), earlier, rows[t])
    return rows[start:], np.isnan(new).sum(axis=0)


@dataclass
class RuleErrors:
    """Running sums of the k-season mean's one-season-ahead in-sample errors, for every k = 1..seasons
    and two lags (a season, and one step for the short-history naive rule): arrays (2, seasons, n).

    Every k is kept because the rule uses more seasons as history grows; sums, not the errors, so
    that an update adds the new points' errors only.
    """

    total: np.ndarray
    squares: np.ndarray
    count: np.ndarray

    def __iadd__(self, other: RuleErrors) -> RuleErrors:
        self.total, self.squares, self.count = self.total + other.total, self.squares + other.squares, self.count + other.count
        return self

    def std(self, seasonal: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Standard deviation of each series' errors of its rule: ``seasonal`` 1 for the season's lag,
        0 for one step; the mean of ``k`` lags (arrays of shape (n,))."""
        pick = seasonal, k - 1, np.arange(len(k))
        count = np.maximum(self.count[pick], 1)
        mean = self.total[pick] / count
        return np.sqrt(np.maximum(self.squares[pick] / count - mean * mean, 0.0))


def rule_errors(values: np.ndarray, start: int, lags: tuple[int, int], seasons: int) -> RuleErrors:
    """Sums over rows ``start:`` of ``values`` (time, n, no gaps after each series' start) of the
    errors of the mean of the values 1..k lags earlier, for each lag and k = 1..seasons."""
    target = values[start:]
    shape = (len(lags), seasons, values.shape[1])
    total, squares, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for a, lag in enumerate(lags):
        running = np.zeros_like(target)
        for k in range(1, seasons + 1):
            running = running + lagged(values, k * lag, start)
            error = target - running / k
            ok = np.isfinite(error)
            error = np.where(ok, error, 0.0)
            total[a, k - 1], squares[a, k - 1], count[a, k - 1] = error.sum(axis=0), (error * error).sum(axis=0), ok.sum(axis=0)
    return RuleErrors(total, squares, count)


def recent_sums(recent: np.ndarray, block: int, seasons: int, k: np.ndarray) -> np.ndarray:
    """Per series, the sum of its last ``k`` blocks of ``block`` rows of ``recent`` (time, n), shape (block, n)."""
    blocks = recent[len(recent) - seasons * block :].reshape(seasons, block, -1)
    newest_first = np.cumsum(blocks[::-1], axis=0)
    return np.take_along_axis(newest_first, (k - 1)[None, None, :], axis=0)[0]


# -- estimators --------------------------------------------------------------------------------
class SeasonalMean(VectorForecaster):
    """The mean of the last ``seasons`` seasons at each phase of the season.

    Averaging several seasons trades reaction speed for noise: with counts as noisy as cell
    traffic, the mean daily profile of the last week beats yesterday alone. Intervals come from
    the spread of the same rule's in-sample errors. Histories shorter than two seasons fall back
    to the naive rule (the mean of the last ``seasons`` values) and say so in the note.
    """

    name = "seasonal_mean"

    def __init__(self, season_length: int = 24, seasons: int = 7) -> None:
        self.season_length = season_length
        self.seasons = seasons

    def _lags(self) -> tuple[int, int]:
        return 1, self.season_length

    def _fit_values(self, values: np.ndarray) -> None:
        self.day_ = steps_per(DAY, self.step_)
        clean, self.filled_ = repair_missing(values, self.day_)
        first = np.isfinite(values).argmax(axis=0)
        self.late_starts_ = {i: self.last_time_ - (len(values) - 1 - r) * self.step_ for i, r in enumerate(first) if r}
        self.length_ = len(values) - first
        self.errors_ = rule_errors(clean, 0, self._lags(), self.seasons)
        memory = max(self.seasons * self.season_length, self.day_)
        padding = np.full((max(0, memory - len(clean)), clean.shape[1]), np.nan)
        self.recent_ = np.vstack([padding, clean[len(clean) - min(memory, len(clean)) :]])

    def _update_values(self, values: np.ndarray) -> None:
        repaired, filled = repair_forward(self.recent_, values, self.day_)
        context = np.vstack([self.recent_, repaired])
        self.errors_ += rule_errors(context, len(self.recent_), self._lags(), self.seasons)
        self.recent_ = context[len(repaired) :]
        self.filled_ = self.filled_ + filled
        self.length_ = self.length_ + len(values)

    def _rule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per series: whether the history holds two seasons, the rule's lag (a season, else 1) and k."""
        m, n = self.season_length, self.length_
        long = n >= 2 * m
        lag = np.where(long, m, 1)
        k = np.where(lag > 1, np.minimum(self.seasons, n // m - 1), np.minimum(self.seasons, n))
        return long, lag, np.maximum(k, 1)

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        m, n = self.season_length, self.length_
        long, lag, k = self._rule()
        h = np.arange(horizon)
        seasonal = (recent_sums(self.recent_, m, self.seasons, k) / k)[h % m].T
        naive = recent_sums(self.recent_, 1, self.seasons, k)[0] / k
        mean = np.where(long[:, None], seasonal, naive[:, None])
        scale = self.errors_.std(long.astype(int), k)
        tiny = n <= k * lag + 1  # no error of the rule in sample yet: the spread of one-step changes
        scale = np.where(tiny, np.where(n > 2, self.errors_.std(np.zeros_like(k), np.ones_like(k)), 0.0), scale)
        seasons_ahead = h[None, :] // lag[:, None] + 1
        return mean, scale[:, None] * np.sqrt(1 + (seasons_ahead - 1) / k[:, None])

    def _note(self, i: int) -> str:
        notes = []
        if i in self.late_starts_:
            notes.append(f"starts late at {self.late_starts_[i]:%Y-%m-%d %H:%M}")
        if self.filled_[i]:
            notes.append(f"{self.filled_[i]} missing windows filled")
        if self.length_[i] < 2 * self.season_length:
            notes.append(f"history of {self.length_[i]} points is shorter than two seasons: naive forecast")
        return "; ".join(notes)


class SeasonalNaive(SeasonalMean):
    """Repeat the last ``season_length`` values; intervals widen with every season ahead."""

    name = "seasonal_naive"
    seasons = 1

    def __init__(self, season_length: int = 24) -> None:
        self.season_length = season_length
