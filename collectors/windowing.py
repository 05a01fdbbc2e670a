"""Event-time tumbling windows with a watermark, as a plain state machine (no I/O).

Records aggregate into regular series per (source, metric): each window keeps count, sum, min
and max. A window closes once its series' watermark (the largest event time seen for that series,
minus the allowed lateness) passes its end, or when the caller closes everything on idleness.
Watermarks are per series, not per partition, because devices batch their own records: one
device's batch may be hours ahead of another's in the same partition without either being late. A record whose window
has already closed is *late*: it is not aggregated, and :meth:`TumblingWindows.add` says so, so
the caller can count it and route it somewhere visible instead of dropping it silently.

The whole state round-trips through :meth:`snapshot` / :meth:`restore`, which is what makes the
collector's checkpoints, and so exactly-once aggregation under redelivery, possible.

Aggregates are always finite: values are refused unless within ``MAX_ABS_VALUE``, and no window can
hold enough of those for its sum to overflow. A window published with an inf or NaN aggregate
would reach the series topic as ``null`` and poison every consumer, so a value outside the bound
is a caller's bug and raises rather than being aggregated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from nm_toolkit.schemas import MAX_ABS_VALUE, Location, SeriesPoint

SeriesKey = tuple[str, str]  # (source, metric)


@dataclass(slots=True)
class WindowAggregate:
    """Running count/sum/min/max of one window, plus descriptive fields of its first record."""

    count: int
    sum: float
    min: float
    max: float
    unit: str
    location: Location | None

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, count: int, total: float, low: float, high: float) -> None:
        self.count += count
        self.sum += total
        self.min = min(self.min, low)
        self.max = max(self.max, high)


def _unbounded(value: float) -> ValueError:
    return ValueError(
        f"value {value!r} is outside [-{MAX_ABS_VALUE:g}, {MAX_ABS_VALUE:g}]: window sums could overflow; "
        "validate telemetry (TelemetryRecord, parse_columns) before windowing it"
    )


class TumblingWindows:
    """Tumbling windows of ``window_seconds`` over event time, for one stream partition."""

    def __init__(self, window_seconds: int, allowed_lateness_seconds: float = 0.0) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self._open: dict[tuple[str, str, int], WindowAggregate] = {}
        self._closed_until: dict[SeriesKey, int] = {}
        self._max_event_time: dict[SeriesKey, float] = {}

    def watermark(self, source: str, metric: str) -> float:
        """Event time of a series before which no more of its records are expected."""
        return self._max_event_time.get((source, metric), -math.inf) - self.allowed_lateness_seconds

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def window_start(self, ts: float) -> int:
        return int(ts // self.window_seconds) * self.window_seconds

    def add(
        self,
        source: str,
        metric: str,
        ts: float,
        value: float,
        unit: str = "",
        location: Location | None = None,
    ) -> bool:
        """Aggregate one record; return False (and change nothing) if its window already closed.

        Raises ValueError (and changes nothing) for a value that is NaN or beyond ``MAX_ABS_VALUE``.
        """
        if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
            raise _unbounded(value)
        # The hot path of the collector: the watermark test is inlined on purpose.
        width = self.window_seconds
        start = int(ts // width) * width
        series = (source, metric)
        max_seen = self._max_event_time.get(series, -math.inf)
        if start + width <= max_seen - self.allowed_lateness_seconds or start < self._closed_until.get(series, -1):
            return False
        key = (source, metric, start)
        agg = self._open.get(key)
        if agg is None:
            self._open[key] = WindowAggregate(1, value, value, value, unit, location)
        else:
            agg.add(value)
        if ts > max_seen:
            self._max_event_time[series] = ts
        return True

    def add_columns(
        self,
        source: list[str],
        metric: list[str],
        ts: np.ndarray,
        value: np.ndarray,
        unit: str = "",
        location: Location | None = None,
    ) -> np.ndarray:
        """Aggregate many records at once, with the same result as :meth:`add` on each in turn.

        Returns the boolean mask of late records (not aggregated). Raises ValueError (and changes
        nothing) if any value is NaN or beyond ``MAX_ABS_VALUE``.
        """
        late = np.zeros(len(ts), dtype=bool)
        if len(ts) == 0:
            return late
        unbounded = ~(np.abs(value) <= MAX_ABS_VALUE)  # NaN fails the comparison too
        if unbounded.any():
            raise _unbounded(float(value[unbounded][0]))
        width = self.window_seconds
        starts = (np.floor_divide(ts, width) * width).astype(np.int64)
        series_ids: dict[SeriesKey, int] = {}
        ids = np.fromiter((series_ids.setdefault(k, len(series_ids)) for k in zip(source, metric, strict=True)), np.int64, len(ts))
        order = np.argsort(ids, kind="stable")  # each series' records, still in arrival order
        segments = np.split(order, np.flatnonzero(np.diff(ids[order])) + 1)
        for series, rows in zip(series_ids, segments, strict=True):
            seg_ts, seg_start = ts[rows], starts[rows]
            seen = self._max_event_time.get(series, -math.inf)
            # the watermark each record meets: the largest event time before it, this batch included
            before = np.maximum.accumulate(np.concatenate(([seen], seg_ts[:-1])))
            seg_late = (seg_start + width <= before - self.allowed_lateness_seconds) | (
                seg_start < self._closed_until.get(series, -1)
            )
            late[rows] = seg_late
            ok = ~seg_late
            if not ok.any():
                continue
            window_starts, inverse = np.unique(seg_start[ok], return_inverse=True)
            values = value[rows][ok]
            counts = np.bincount(inverse)
            sums = np.bincount(inverse, weights=values)
            mins = np.full(len(window_starts), np.inf)
            maxs = np.full(len(window_starts), -np.inf)
            np.minimum.at(mins, inverse, values)
            np.maximum.at(maxs, inverse, values)
            for start, count, total, lo, hi in zip(window_starts.tolist(), counts.tolist(), sums.tolist(), mins.tolist(), maxs.tolist(), strict=True):
                key = (series[0], series[1], start)
                agg = self._open.get(key)
                if agg is None:
                    self._open[key] = WindowAggregate(count, total, lo, hi, unit, location)
                else:
                    agg.merge(count, total, lo, hi)
            self._max_event_time[series] = max(seen, float(seg_ts[ok].max()))
        return late

    def close_ready(self) -> list[SeriesPoint]:
        """Close and return the windows that end at or before their series' watermark."""
        ready = [k for k in self._open if k[2] + self.window_seconds <= self.watermark(k[0], k[1])]
        return self._close(ready)

    def close_all(self) -> list[SeriesPoint]:
        """Close every open window (on idleness or at the end of a finite input)."""
        return self._close(list(self._open))

    def _close(self, keys: list[tuple[str, str, int]]) -> list[SeriesPoint]:
        points = []
        for key in sorted(keys, key=lambda k: (k[2], k[0], k[1])):
            source, metric, start = key
            agg = self._open.pop(key)
            # bounded inputs make this impossible (see the module docstring); were it not, the window
            # would be published as null
            assert math.isfinite(agg.sum) and math.isfinite(agg.min) and math.isfinite(agg.max), key
            end = start + self.window_seconds
            if end > self._closed_until.get((source, metric), -1):
                self._closed_until[(source, metric)] = end
            points.append(
                SeriesPoint.model_construct(  # built from validated state: no second validation
                    source=source,
                    metric=metric,
                    window_start=datetime.fromtimestamp(start, UTC),
                    window_seconds=self.window_seconds,
                    count=agg.count,
                    sum=agg.sum,
                    min=agg.min,
                    max=agg.max,
                    unit=agg.unit,
                    location=agg.location,
                )
            )
        return points

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the state."""
        return {
            "window_seconds": self.window_seconds,
            "max_event_time": [[s, m, ts] for (s, m), ts in self._max_event_time.items()],
            "open": [
                [s, m, start, a.count, a.sum, a.min, a.max, a.unit, a.location and a.location.model_dump(exclude_none=True)]
                for (s, m, start), a in self._open.items()
            ],
            "closed_until": [[s, m, end] for (s, m), end in self._closed_until.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one from :meth:`snapshot` taken with the same window size."""
        if state["window_seconds"] != self.window_seconds:
            raise ValueError(
                f"checkpoint was taken with {state['window_seconds']} s windows, not {self.window_seconds} s: "
                "use the same collector.window_seconds or a new consumer group"
            )
        self._max_event_time = {(s, m): ts for s, m, ts in state["max_event_time"]}
        self._open = {
            (s, m, start): WindowAggregate(count, total, lo, hi, unit, Location(**loc) if loc else None)
            for s, m, start, count, total, lo, hi, unit, loc in state["open"]
        }
        self._closed_until = {(s, m): end for s, m, end in state["closed_until"]}
