"""Tomorrow looks like the last few days of its kind: working day, Saturday, or Sunday and holiday.

The seasonal mean averages the last seven days whatever they were, and the weekly naive repeats
the same weekday, a holiday included. Grouping days by type instead keeps enough days per profile
to average the noise away (eight Sundays rather than one), and, given a holiday calendar
(:mod:`forecasting.calendar`), a holiday is forecast from the Sundays and holidays before it, and a
holiday in the history does not spoil the next working days' profile. On Milan's Christmas week
this is most of what the ensemble gains from it (``bench/RESULTS.md``, issue 24).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.base import VectorForecaster, steps_per
from forecasting.calendar import DAY_TYPE_NAMES, REDUCED, SATURDAY, WORKING_DAY, day_types
from forecasting.history import DAY


# -- pure functions ----------------------------------------------------------------------------
def phase_moments(values: np.ndarray, phase: np.ndarray, rows: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and standard deviation of ``values[rows]`` (time, n) at each phase of ``period``:
    three (period, n) arrays; missing values are left out, NaN where a phase has none."""
    picked, at = values[rows], phase[rows]
    seen = np.isfinite(picked)
    filled = np.where(seen, picked, 0.0)
    count = np.zeros((period, values.shape[1]))
    total = np.zeros_like(count)
    squares = np.zeros_like(count)
    np.add.at(count, at, seen)
    np.add.at(total, at, filled)
    np.add.at(squares, at, filled**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        sd = np.sqrt(np.maximum(squares / count - mean**2, 0.0) * count / np.maximum(count - 1, 1))
    return count, mean, sd


class DayTypeProfile(VectorForecaster):
    """The mean day of the last ``days`` days of the same type as each forecast day.

    Types are working days, Saturdays, and Sundays with the public holidays of ``calendar`` (an
    ISO 3166 code such as "IT" or "IT-MI"; None: Sundays only). A bridge day, or a working day in
    one of ``breaks`` ("MM-DD..MM-DD", yearly), is forecast halfway between a working day and a
    Saturday. Intervals come from the wider of two spreads at the same time of day, those days' and
    the last week's: a week of holidays strays from its kind (on Milan's validation week, those
    days' spread alone covered 0.81, not 0.90).
    A type the history holds no day of (under a week of history) is forecast from the mean of the
    last seven days, and the note says so.
    """

    name = "day_type"

    def __init__(self, days: int = 8, calendar: str | None = None, breaks: tuple[str, ...] = ()) -> None:
        self.days = days
        self.calendar = calendar
        self.breaks = breaks

    def _memory(self) -> int:
        """Rows kept: enough weeks for ``days`` Sundays, and a week more."""
        return (7 * self.days + 7) * self.day_

    def _fit_values(self, values: np.ndarray) -> None:
        self.day_ = steps_per(DAY, self.step_)
        self.recent_ = values[-self._memory() :]
        self.end_ = self.last_time_

    def _update_values(self, values: np.ndarray) -> None:
        self.recent_ = np.vstack([self.recent_, values])[-self._memory() :]
        self.end_ = self.end_ + self.step_ * len(values)

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        rows = len(self.recent_)
        past = pd.date_range(end=self.end_, periods=rows, freq=self.step_)
        future = pd.date_range(self.end_ + self.step_, periods=horizon, freq=self.step_)
        dates, day_of_row = np.unique(np.asarray(past.normalize()), return_inverse=True)
        # a bridge or break day in the history counts as a working day: it carries the season's
        # level into the working-day profile (Milan: validation 0.802 either way, test 0.773
        # against 0.789 kept apart; bench/RESULTS.md)
        types = day_types(pd.DatetimeIndex(dates), self.calendar, self.breaks)
        types[types == REDUCED] = WORKING_DAY
        phase = self._phase(past)
        recent_week = np.flatnonzero(np.arange(rows) >= rows - 7 * self.day_)
        _, week_mean, week_sd = phase_moments(self.recent_, phase, recent_week, self.day_)
        future_types = day_types(future.normalize(), self.calendar, self.breaks)
        future_phase = self._phase(future)
        n = self.recent_.shape[1]
        mean, sd = np.empty((n, horizon)), np.empty((n, horizon))
        self.missing_types_ = []

        def moments(kind: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            chosen = np.flatnonzero(types == kind)[-self.days :]
            if not len(chosen):
                self.missing_types_.append(DAY_TYPE_NAMES[kind])
            return phase_moments(self.recent_, phase, np.flatnonzero(np.isin(day_of_row, chosen)), self.day_)

        for kind in np.unique(future_types):
            steps = future_types == kind
            if kind == REDUCED:  # halfway between a working day and a Saturday
                (work_count, work_mean, work_sd), (sat_count, sat_mean, sat_sd) = moments(WORKING_DAY), moments(SATURDAY)
                count, kind_mean, kind_sd = np.fmin(work_count, sat_count), (work_mean + sat_mean) / 2, np.fmax(work_sd, sat_sd)
            else:
                count, kind_mean, kind_sd = moments(kind)
            usable = count >= 2
            at = future_phase[steps]
            mean[:, steps] = np.where(count[at] >= 1, kind_mean[at], week_mean[at]).T
            sd[:, steps] = (np.where(usable[at], np.fmax(kind_sd[at], week_sd[at]), week_sd[at]) * np.sqrt(1 + 1 / np.maximum(count[at], 1))).T
        return mean, sd

    def _phase(self, times: pd.DatetimeIndex) -> np.ndarray:
        return np.asarray((times - times.normalize()) // self.step_, dtype=int) % self.day_

    def _note(self, i: int) -> str:
        missing = getattr(self, "missing_types_", [])
        return f"no {' and no '.join(missing)} in the history: the last week's mean day" if missing else ""
