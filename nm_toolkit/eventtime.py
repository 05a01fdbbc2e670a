"""Plausible event times: the one rule every consumer of timestamped messages applies.

A record dated 1970 or next year is a broken clock, not news. Aggregating it would open a window
that no watermark will ever close, and a forecaster handed a point dated 9999 with 1-second windows
would try to allocate the gap in between. So every path that takes an event time from the outside
(JSON records, gNMI notifications, columnar batches, series points) checks it against the same
bounds: no earlier than ``min_timestamp``, no later than ``max_future_seconds`` past now.

Pure: no I/O, and ``now`` can be passed in so that a whole message is judged against one instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime


def _utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (never local time, which ``datetime.timestamp`` would assume)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def epoch_seconds(value: datetime | float) -> float:
    """Unix seconds of a datetime or number; aware datetimes never overflow, whatever the year."""
    return _utc(value).timestamp() if isinstance(value, datetime) else float(value)


def describe_time(seconds: float) -> str:
    """An ISO-8601 rendering of Unix seconds for a message, or the number itself when it is not a
    representable date (NaN, inf, or past year 9999)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} (Unix seconds)"


@dataclass(frozen=True)
class EventTimeBounds:
    """Event times from ``min_timestamp`` up to ``max_future_seconds`` past now are plausible."""

    min_timestamp: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_timestamp", _utc(self.min_timestamp))
        if not (math.isfinite(self.max_future_seconds) and self.max_future_seconds >= 0):
            raise ValueError(f"max_future_seconds must be a finite number >= 0, not {self.max_future_seconds!r}")

    @classmethod
    def from_settings(cls, min_timestamp: str, max_future_seconds: float) -> EventTimeBounds:
        """From the collector settings' fields (``min_timestamp`` as ISO-8601, naive meaning UTC)."""
        return cls(datetime.fromisoformat(min_timestamp), float(max_future_seconds))

    def limits(self, now: datetime | None = None) -> tuple[float, float]:
        """The earliest and latest plausible times in Unix seconds, for vectorised checks."""
        now_s = epoch_seconds(now) if now is not None else datetime.now(UTC).timestamp()
        return self.min_timestamp.timestamp(), now_s + self.max_future_seconds

    def reason(self, ts: datetime | float, now: datetime | None = None) -> str | None:
        """None when ``ts`` is plausible, else why not (one line, for a dead letter)."""
        earliest, latest = self.limits(now)
        if earliest <= epoch_seconds(ts) <= latest:  # False for NaN too
            return None
        return self.outside(ts)

    def outside(self, ts: datetime | float) -> str:
        """The reason for a time already found outside the bounds (by :meth:`limits`, vectorised)."""
        shown = _utc(ts).isoformat() if isinstance(ts, datetime) else describe_time(float(ts))
        return (
            f"ts: {shown} is outside the plausible range "
            f"[{self.min_timestamp.isoformat()}, now + {self.max_future_seconds:.0f} s]"
        )
