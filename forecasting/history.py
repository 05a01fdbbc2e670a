"""Turning the mess real telemetry has into a series a model can fit, and saying what was done.

Missing windows, series that start late and gaps are repaired here, once, so that every model sees
the same clean history; each repair is reported as a note that travels with the forecast.
"""

from __future__ import annotations

import pandas as pd

DAY = pd.Timedelta(days=1)
WEEK = pd.Timedelta(days=7)


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The sampling step of ``index``: the most common spacing, robust to a few missing rows."""
    if len(index) < 2:
        raise ValueError("at least two timestamps are needed to infer the sampling step")
    return pd.Timedelta(pd.Series(index[1:] - index[:-1]).mode().iloc[0])


def regular_grid(frame: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """Reindex onto the inferred regular grid so that windows that never arrived become NaN."""
    index = pd.DatetimeIndex(frame.index)
    step = infer_step(index)
    grid = pd.date_range(index[0], index[-1], freq=step)
    return frame if len(grid) == len(index) and (grid == index).all() else frame.reindex(grid)


def clean_history(y: pd.Series) -> tuple[pd.Series, str]:
    """Drop missing steps before the first observation, fill gaps, and describe what changed.

    Gaps are filled with the value one day earlier (or later) where known, which keeps the daily
    shape through an outage, and by linear interpolation otherwise.
    """
    if not isinstance(y.index, pd.DatetimeIndex):
        raise ValueError("a series needs a DatetimeIndex")
    y = regular_grid(y.astype(float).sort_index())
    first = y.first_valid_index()
    if first is None:
        raise ValueError("cannot fit a forecaster on an empty or all-missing series")
    notes = []
    if first != y.index[0]:
        notes.append(f"starts late at {first:%Y-%m-%d %H:%M}")
        y = y.loc[first:]
    missing = int(y.isna().sum())
    if missing:
        day = pd.Timedelta(DAY) // infer_step(y.index) if len(y) > 1 else 1
        y = y.fillna(y.shift(day)).fillna(y.shift(-day)).interpolate(limit_direction="both")
        notes.append(f"{missing} missing windows filled")
    return y, "; ".join(notes)
