"""The forecast store: issued forecasts (model, issue time, horizon, intervals) and the series
history they were made from, in one SQLite file under ``settings.state_dir``.

SQLite because it is embedded, transactional and needs no server; one writer (the service or a
CLI command) and any number of readers (``nmt forecast show/plot/list``) can share the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from nm_toolkit.schemas import Forecast

SCHEMA = """
CREATE TABLE IF NOT EXISTS forecasts (
    series_id TEXT NOT NULL,
    issued_at REAL NOT NULL,
    model TEXT NOT NULL,
    start REAL NOT NULL,
    step_seconds INTEGER NOT NULL,
    horizon INTEGER NOT NULL,
    level REAL NOT NULL,
    mean BLOB NOT NULL,
    lower BLOB NOT NULL,
    upper BLOB NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (series_id, issued_at, model)
);
CREATE TABLE IF NOT EXISTS points (
    series_id TEXT NOT NULL,
    window_start REAL NOT NULL,
    step_seconds INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, window_start)
);
CREATE INDEX IF NOT EXISTS points_by_window ON points (window_start);
"""


def default_store_path(state_dir: Path) -> Path:
    return state_dir / "forecasts.sqlite"


def _ts(value: datetime) -> float:
    return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()


class ForecastStore:
    """Forecasts keyed by (series, issue time, model) and history points keyed by (series, window)."""

    def __init__(self, path: Path | None) -> None:
        """Open (or create) the store at ``path``; None keeps it in memory, for a bus that is not durable."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path or ":memory:", timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    # -- forecasts --------------------------------------------------------------------------
    def put_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Insert (or replace, for the same series, issue time and model) forecasts; return how many."""
        rows = [
            (
                f.series_id, _ts(f.issued_at), f.model, _ts(f.start), f.step_seconds, f.horizon, f.level,
                orjson.dumps(f.mean), orjson.dumps(f.lower), orjson.dumps(f.upper), f.note,
            )
            for f in forecasts
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO forecasts VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def latest(self, series_id: str, at: datetime | None = None) -> Forecast | None:
        """The newest forecast of ``series_id`` issued at or before ``at`` (default: any time)."""
        limit = _ts(at) if at else float("inf")
        row = self._db.execute(
            "SELECT * FROM forecasts WHERE series_id = ? AND issued_at <= ? ORDER BY issued_at DESC LIMIT 1",
            (series_id, limit),
        ).fetchone()
        return None if row is None else _forecast(row)

    def summary(self) -> list[dict[str, object]]:
        """One row per series: how many forecasts, the newest issue time, its model and horizon."""
        rows = self._db.execute(
            """SELECT f.series_id, c.n, f.issued_at, f.model, f.horizon, f.step_seconds,
                      (SELECT COUNT(*) FROM points p WHERE p.series_id = f.series_id)
               FROM forecasts f JOIN (SELECT series_id, COUNT(*) n, MAX(issued_at) last FROM forecasts GROUP BY series_id) c
                 ON f.series_id = c.series_id AND f.issued_at = c.last
               GROUP BY f.series_id ORDER BY f.series_id"""
        ).fetchall()
        return [
            {
                "series_id": r[0], "forecasts": r[1], "latest_issued_at": datetime.fromtimestamp(r[2], UTC).isoformat(),
                "model": r[3], "horizon": r[4], "step_seconds": r[5], "history_points": r[6],
            }
            for r in rows
        ]

    # -- history ----------------------------------------------------------------------------
    def put_points(self, points: Iterable[tuple[str, datetime, int, float]]) -> int:
        """Insert (series, window start, step seconds, value); a re-emitted window replaces the old one."""
        rows = [(s, _ts(t), step, v) for s, t, step, v in points]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO points VALUES (?,?,?,?)", rows)
        return len(rows)

    def series_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT series_id FROM points ORDER BY series_id")]

    def history(self, series_id: str, last: int | None = None) -> pd.Series:
        """The stored windows of ``series_id`` (the newest ``last`` of them) on a regular grid."""
        rows = self._db.execute(
            "SELECT window_start, value, step_seconds FROM points WHERE series_id = ? ORDER BY window_start DESC LIMIT ?",
            (series_id, -1 if last is None else last),
        ).fetchall()
        if not rows:
            return pd.Series(dtype=float, name=series_id)
        rows.reverse()
        index = pd.to_datetime(np.array([r[0] for r in rows]), unit="s", utc=True)  # an array: a list parses one by one
        raw = pd.Series([r[1] for r in rows], index=index, name=series_id, dtype=float)
        step = pd.Timedelta(seconds=rows[-1][2])
        first = index[0] if last is None else max(index[0], index[-1] - (last - 1) * step)
        # The grid is "the newest ``last`` steps", never the span between the oldest and newest
        # rows: one window dated years apart from the rest must not allocate the years between.
        return raw.reindex(pd.date_range(first, index[-1], freq=step))

    def points_since(self, after: datetime) -> pd.DataFrame:
        """Every stored window that starts after ``after``, of all series (``series_id``, ``window_start``
        (UTC), ``step_seconds``, ``value``): what a forecaster needs to advance, read by its index in
        time, so its cost follows the new windows, not the history."""
        rows = self._db.execute(
            "SELECT series_id, window_start, step_seconds, value FROM points WHERE window_start > ? ORDER BY window_start",
            (_ts(after),),
        ).fetchall()
        frame = pd.DataFrame(rows, columns=["series_id", "window_start", "step_seconds", "value"])
        frame["window_start"] = pd.to_datetime(frame["window_start"], unit="s", utc=True)
        return frame.astype({"value": float})

    # -- retention --------------------------------------------------------------------------
    def prune(self, now: datetime, retention: timedelta, max_points: int | None = None) -> dict[str, int]:
        """Delete forecasts issued before ``now - retention``, windows older than ``retention``
        before their series' newest window, and all but the newest ``max_points`` windows of each
        series; return how many rows of each went.

        Windows age in event time, not wall-clock time, so a replay of last year's telemetry keeps
        its history while a live series drops what is older than the retention. Each series' oldest
        window to keep is found through the (series, window) index, so pruning costs about what it
        deletes, not a sort of the whole history.
        """
        cutoff = _ts(now - retention)
        points = 0
        with self._db:
            forecasts = self._db.execute("DELETE FROM forecasts WHERE issued_at < ?", (cutoff,)).rowcount
            newest = self._db.execute("SELECT series_id, MAX(window_start) FROM points GROUP BY series_id").fetchall()
            for series_id, last in newest:
                keep_from = last - retention.total_seconds()
                if max_points is not None:
                    row = self._db.execute(
                        "SELECT window_start FROM points WHERE series_id = ? ORDER BY window_start DESC LIMIT 1 OFFSET ?",
                        (series_id, max_points - 1),
                    ).fetchone()
                    keep_from = max(keep_from, row[0]) if row else keep_from
                points += self._db.execute(
                    "DELETE FROM points WHERE series_id = ? AND window_start < ?", (series_id, keep_from)
                ).rowcount
        return {"forecasts": forecasts, "points": points}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ForecastStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forecast(row: tuple) -> Forecast:  # type: ignore[type-arg]
    series_id, issued, model, start, step, _horizon, level, mean, lower, upper, note = row
    return Forecast(
        series_id=series_id, model=model, issued_at=datetime.fromtimestamp(issued, UTC), step_seconds=step,
        start=datetime.fromtimestamp(start, UTC), mean=orjson.loads(mean), lower=orjson.loads(lower),
        upper=orjson.loads(upper), level=level, note=note,
    )
