"""Producing telemetry: batching records into messages and replaying recorded data in time."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import orjson
import pandas as pd

from collectors.synthetic import frame_records
from nm_toolkit.bus import Producer
from nm_toolkit.schemas import TelemetryRecord


def record_dict(record: TelemetryRecord) -> dict[str, object]:
    """The wire form of a record (epoch-second timestamps keep messages small and fast)."""
    out: dict[str, object] = {
        "ts": record.ts.timestamp(),
        "source": record.source,
        "metric": record.metric,
        "value": record.value,
    }
    if record.unit:
        out["unit"] = record.unit
    if record.location is not None:
        out["location"] = record.location.model_dump(exclude_none=True)
    return out


def publish_records(
    producer: Producer, topic: str, records: Iterable[TelemetryRecord], batch_size: int = 500
) -> tuple[int, int]:
    """Send records as ``{"records": [...]}`` batches keyed by source; return (records, messages).

    Keying by source keeps each series in one partition, which the windowing relies on.
    """
    pending: dict[str, list[dict[str, object]]] = defaultdict(list)
    n_records = n_messages = 0

    def send(source: str) -> None:
        nonlocal n_messages
        producer.send(topic, orjson.dumps({"records": pending.pop(source)}), source.encode())
        n_messages += 1

    for record in records:
        batch = pending[record.source]
        batch.append(record_dict(record))
        n_records += 1
        if len(batch) >= batch_size:
            send(record.source)
    for source in list(pending):
        send(source)
    return n_records, n_messages


def replay_frame(
    producer: Producer,
    topic: str,
    frame: pd.DataFrame,
    metric: str,
    *,
    speedup: float | None = None,
    unit: str = "",
    on_step: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Replay a wide frame one timestamp at a time; ``speedup`` x real time, None = no waiting."""
    step = frame.index.to_series().diff().median() if len(frame) > 1 else pd.Timedelta(0)
    delay = step.total_seconds() / speedup if speedup else 0.0
    n_records = n_messages = 0
    started = time.monotonic()
    for i in range(len(frame)):
        r, m = publish_records(producer, topic, frame_records(frame.iloc[i : i + 1], metric, unit))
        n_records += r
        n_messages += m
        if on_step:
            on_step(i + 1)
        if delay:
            time.sleep(max(0.0, started + (i + 1) * delay - time.monotonic()))
    producer.flush()
    return n_records, n_messages
