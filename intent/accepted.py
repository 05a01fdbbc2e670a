"""The operator intents the service has accepted, kept durably so conflicts are checked against
everything accepted before, across restarts, and a redelivered intent is recognised as itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class AcceptedIntents:
    """Accepted intent records (JSON, as published) by request id, in one SQLite file."""

    def __init__(self, path: Path | None) -> None:
        """Keep the records in ``path``, or in memory when None (for a bus that is not durable)."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS accepted (request_id TEXT PRIMARY KEY, seq INTEGER, record BLOB)")

    def records(self) -> dict[str, bytes]:
        """Every accepted record by request id, oldest first."""
        return dict(self._db.execute("SELECT request_id, record FROM accepted ORDER BY seq").fetchall())

    def add(self, entries: list[tuple[str, bytes]]) -> None:
        """Atomically store ``(request_id, record)`` pairs, after those accepted before."""
        if not entries:
            return
        with self._db:
            self._db.execute("BEGIN")
            (start,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM accepted").fetchone()
            self._db.executemany(
                "INSERT OR REPLACE INTO accepted VALUES (?, ?, ?)",
                [(rid, start + 1 + i, record) for i, (rid, record) in enumerate(entries)],
            )

    def close(self) -> None:
        self._db.close()
