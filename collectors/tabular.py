"""CSV telemetry files as a wide frame: a UTC DatetimeIndex and one column per series.

Two layouts are accepted, as people have them: *wide* (``timestamp`` then one column per series,
like the Milan dataset) and *long* (``timestamp, series, value``). Naive timestamps are UTC.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nm_toolkit.errors import UserError

TIME_COLUMNS = ("timestamp", "ts", "time", "datetime")
LONG_SERIES_COLUMNS = ("series", "source", "series_id", "cell")


class TelemetryFileError(UserError):
    """A telemetry file that cannot be read as a time series table."""


def load_wide_frame(path: Path) -> pd.DataFrame:
    """Read ``path`` (wide or long CSV) into a float frame sorted by time, one column per series."""
    if not path.is_file():
        raise TelemetryFileError(f"{path} does not exist: pass the path of a CSV file")
    try:
        raw = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise TelemetryFileError(f"{path} is empty: it needs a header row and data rows") from exc
    if raw.empty:
        raise TelemetryFileError(f"{path} has a header but no data rows")
    time_col = next((c for c in raw.columns if str(c).lower() in TIME_COLUMNS), None)
    if time_col is None:
        raise TelemetryFileError(
            f"{path} has no time column: name one of {', '.join(TIME_COLUMNS)} (found {', '.join(map(str, raw.columns[:5]))})"
        )
    try:
        times = pd.to_datetime(raw[time_col], utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise TelemetryFileError(f"{path}: column {time_col!r} has values that are not timestamps ({exc})") from exc
    series_col = next((c for c in raw.columns if str(c).lower() in LONG_SERIES_COLUMNS), None)
    if series_col is not None and "value" in raw.columns and len(raw.columns) == 3:
        frame = raw.assign(**{time_col: times}).pivot_table(index=time_col, columns=series_col, values="value", aggfunc="sum")
        frame.columns = [str(c) for c in frame.columns]
    else:
        if not times.is_monotonic_increasing:
            raise TelemetryFileError(f"{path}: timestamps are not in increasing order: sort the file by {time_col!r}")
        if times.duplicated().any():
            raise TelemetryFileError(f"{path}: timestamp {times[times.duplicated()].iloc[0]} appears twice")
        frame = raw.drop(columns=[time_col]).set_index(pd.DatetimeIndex(times, name="timestamp"))
        frame.columns = [str(c) for c in frame.columns]
    frame = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    if frame.shape[1] == 0:
        raise TelemetryFileError(f"{path} has a time column but no series columns")
    return frame.sort_index()
