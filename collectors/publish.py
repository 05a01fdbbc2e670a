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
    producer: Producer,
    topic: str,
    records: Iterable[TelemetryRecord],
    batch_size: int = 500,
    *,
    columnar: bool = False,
) -> tuple[int, int]:
    """Send records in batches keyed by source; return (records, messages).

    Row batches are ``{"records": [...]}``; ``columnar`` batches are ``{"columns": {...}}`` (see
    :mod:`collectors.columnar`), grouped so that unit and location are shared by the batch.
    Keying by source keeps each series in one partition, which the windowing relies on.
    """
    pending: dict[tuple[str, str, str], list[TelemetryRecord]] = defaultdict(list)
    n_records = n_messages = 0

    def send(group: tuple[str, str, str]) -> None:
        nonlocal n_messages
        batch = pending.pop(group)
        producer.send(topic, _columnar(batch) if columnar else orjson.dumps({"records": [record_dict(r) for r in batch]}), group[0].encode())
        n_messages += 1

    for record in records:
        group = (record.source, record.unit, record.location.model_dump_json() if columnar and record.location else "")
        batch = pending[group]
        batch.append(record)
        n_records += 1
        if len(batch) >= batch_size:
            send(group)
    for group in list(pending):
        send(group)
    return n_records, n_messages


def _columnar(batch: list[TelemetryRecord]) -> bytes:
    first = batch[0]
    message: dict[str, object] = {
        "columns": {
            "ts": [r.ts.timestamp() for r in batch],
            "source": [r.source for r in batch],
            "metric": [r.metric for r in batch],
            "value": [r.value for r in batch],
        }
    }
    if first.unit:
        message["unit"] = first.unit
    if first.location is not None:
        message["location"] = first.location.model_dump(exclude_none=True)
    return orjson.dumps(message)


def replay_frame(
    producer: Producer,
    topic: str,
    frame: pd.DataFrame,
    metric: str | None,
    *,
    speedup: float | None = None,
    unit: str = "",
    on_step: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Replay a wide frame one timestamp at a time; ``speedup`` x real time, None = no waiting.
    ``metric`` None: the columns are series ids (``SOURCE|METRIC``) (:func:`frame_records`)."""
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
