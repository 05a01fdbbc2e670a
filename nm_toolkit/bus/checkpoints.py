"""Durable per-partition state of a stream service (a collector's windows, say) and its next offset.

Written (in one SQLite transaction) *before* offsets are committed to the bus, so the checkpoint
is always at or ahead of the committed offset. After a crash the collector restores the
checkpoint and skips redelivered messages below its offset: every record counts exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from nm_toolkit.bus.base import Bus


class CheckpointStore:
    """Checkpoints keyed by (consumer group, topic, partition) in one SQLite file."""

    def __init__(self, path: Path | None) -> None:
        """Keep checkpoints in ``path``, or in memory when None (for a bus that is not durable)."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS checkpoint (grp TEXT, topic TEXT, part INTEGER, next_offset INTEGER,"
            " state BLOB, PRIMARY KEY (grp, topic, part))"
        )

    @classmethod
    def for_service(cls, state_dir: Path, bus: Bus, name: str) -> CheckpointStore:
        """The checkpoint file of service ``name`` for ``bus``'s cluster, under ``state_dir`` (in
        memory for a bus whose messages do not outlive the process, where offsets saved against
        it would mean nothing)."""
        return cls(state_dir / f"{name}-{bus.cluster_id()}.sqlite" if bus.durable else None)

    def load(self, group: str, topic: str, partition: int) -> tuple[int, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT next_offset, state FROM checkpoint WHERE grp=? AND topic=? AND part=?",
            (group, topic, partition),
        ).fetchone()
        return None if row is None else (int(row[0]), orjson.loads(row[1]))

    def save(self, group: str, entries: Iterable[tuple[str, int, int, dict[str, Any]]]) -> None:
        """Atomically store ``(topic, partition, next_offset, state)`` entries."""
        rows = [(group, t, p, o, orjson.dumps(s)) for t, p, o, s in entries]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO checkpoint VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
