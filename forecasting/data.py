"""Reading series tables for forecasting: the collectors' CSV reader plus the checks models need."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from collectors.tabular import TelemetryFileError, load_wide_frame
from forecasting.history import infer_step, regular_grid


def load_series_frame(path: Path, series: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.Timedelta]:
    """A regular wide frame (one column per series) and its inferred step, or a one-line error.

    Long files must not repeat a (timestamp, series) pair; wide files must be sorted by time (both
    checked by the collectors' reader). Missing rows become NaN windows on the regular grid.
    """
    frame = load_wide_frame(path)
    if series:
        unknown = [s for s in series if s not in frame.columns]
        if unknown:
            shown = ", ".join(list(frame.columns[:8])) + (", ..." if frame.shape[1] > 8 else "")
            raise TelemetryFileError(f"{path}: no series named {', '.join(unknown)}: choose from {shown}")
        frame = frame[list(series)]
    if len(frame) < 2:
        raise TelemetryFileError(f"{path} has {len(frame)} time step(s): at least two are needed to infer the step")
    empty = [str(c) for c in frame.columns if frame[c].notna().sum() == 0]
    if empty:
        raise TelemetryFileError(
            f"{path}: series {', '.join(empty[:5])} have no numeric values: drop those columns or fill them"
        )
    step = infer_step(pd.DatetimeIndex(frame.index))
    if step <= pd.Timedelta(0):
        raise TelemetryFileError(f"{path}: timestamps repeat: keep one row per time step")
    return regular_grid(frame), step
