"""The telemetry collector: a consumer-group member that turns the telemetry topic into series.

Per poll it decodes and validates every message, aggregates good records into tumbling windows,
publishes closed windows to the series topic, dead-letters what it cannot use (original bytes,
reason in headers) and routes late records to the late topic. Every ``checkpoint_interval`` it
flushes the producer, checkpoints window state with the next offsets, and only then commits the
offsets: at-least-once delivery, made exactly-once for the aggregates by skipping redelivered
offsets below the checkpoint. Works on any :class:`~nm_toolkit.bus.Bus`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import orjson

from collectors.checkpoints import CheckpointStore
from collectors.decode import Decoded, RecordError, TelemetryDecoder
from collectors.gnmi import CounterRates
from collectors.windowing import TumblingWindows
from nm_toolkit.bus import Bus, Message, TopicPartition
from nm_toolkit.config import Settings
from nm_toolkit.schemas import SeriesPoint, TelemetryRecord

log = logging.getLogger(__name__)

DEAD_LETTER_REASON = "nmt.error.reason"
DEAD_LETTER_ERRORS = "nmt.error.records"
DEAD_LETTER_ORIGIN = "nmt.error.origin"
DEAD_LETTER_COUNT = "nmt.error.count"
MAX_ERRORS_IN_HEADER = 100  # a batch of bad records keeps its header small; the count is exact


@dataclass
class CollectorStats:
    """Counters a person or a test can check: nothing that enters leaves unaccounted for."""

    messages: int = 0
    records: int = 0
    dead_letter_records: int = 0
    dead_letter_messages: int = 0
    late_records: int = 0
    redelivered_skipped: int = 0
    windows_emitted: int = 0
    checkpoints: int = 0


class PartitionState:
    """What the collector keeps per assigned partition: windows, counter readings, next offset."""

    def __init__(self, windows: TumblingWindows, rates: CounterRates, next_offset: int = 0) -> None:
        self.windows = windows
        self.rates = rates
        self.next_offset = next_offset
        self.last_record_at = time.monotonic()
        self.dirty = False

    def ingest(self, decoded: Decoded) -> tuple[int, list[TelemetryRecord]]:
        """Window the decoded records (counter samples become rates first); return how many
        records were taken and the late ones, which the windows refused."""
        records = decoded.records
        if decoded.counters:
            records = records + [r for s in decoded.counters if (r := self.rates.update(s)) is not None]
        add = self.windows.add
        late = [r for r in records if not add(r.source, r.metric, r.ts.timestamp(), r.value, r.unit, r.location)]
        columns = decoded.columns
        if columns is None:
            return len(records), late
        late_rows = np.flatnonzero(
            self.windows.add_columns(columns.source, columns.metric, columns.ts, columns.value, columns.unit, columns.location)
        )
        late.extend(
            TelemetryRecord(
                ts=columns.ts[i], source=columns.source[i], metric=columns.metric[i], value=columns.value[i],
                unit=columns.unit, location=columns.location,
            )  # fmt: skip
            for i in late_rows
        )
        return len(records) + len(columns), late


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is applied.

    Decoding creates hundreds of thousands of short-lived, acyclic objects per second; reference
    counting frees them all, but their allocations keep triggering collections that traverse the
    long-lived window state, which halved throughput in bench/ingest.py. Collecting between
    batches instead loses nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def dead_letter_headers(message: Message, errors: list[RecordError]) -> list[tuple[str, bytes]]:
    """Headers that say why a message was dead-lettered and where it came from."""
    return [
        (DEAD_LETTER_REASON, errors[0].reason.encode()),
        (DEAD_LETTER_ERRORS, orjson.dumps([{"index": e.index, "reason": e.reason} for e in errors[:MAX_ERRORS_IN_HEADER]])),
        (DEAD_LETTER_COUNT, str(len(errors)).encode()),
        (DEAD_LETTER_ORIGIN, message_origin(message)),
    ]


class TelemetryCollector:
    """Consume ``settings.topics.telemetry`` in group ``settings.collector.group_id``."""

    def __init__(self, bus: Bus, settings: Settings, checkpoints: CheckpointStore | None = None) -> None:
        self.bus = bus
        self.settings = settings
        self._cfg = settings.collector
        self._topics = settings.topics
        self.decoder = TelemetryDecoder(
            max_message_bytes=self._cfg.max_message_bytes,
            min_timestamp=datetime.fromisoformat(self._cfg.min_timestamp),
            max_future_seconds=self._cfg.max_future_seconds,
        )
        self.checkpoints = checkpoints or CheckpointStore(
            settings.state_dir / f"collector-{bus.cluster_id()}.sqlite" if bus.durable else None
        )
        self.stats = CollectorStats()
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._lock = threading.RLock()
        self._last_checkpoint = time.monotonic()
        bus.create_topics(
            [self._topics.telemetry, self._topics.series, self._topics.dead_letter, self._topics.late]
        )
        self.producer = bus.producer()
        self.consumer = bus.consumer(
            [self._topics.telemetry],
            self._cfg.group_id,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            max_poll_records=self._cfg.max_poll_records,
        )

    # -- partition lifecycle ---------------------------------------------------------------
    def _on_assign(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            for topic, partition in partitions:
                windows = TumblingWindows(self._cfg.window_seconds, self._cfg.allowed_lateness_seconds)
                rates = CounterRates()
                next_offset = 0
                saved = self.checkpoints.load(self._cfg.group_id, topic, partition)
                if saved is not None:
                    next_offset, state = saved
                    windows.restore(state["windows"])
                    rates.restore(state["rates"])
                self._partitions[(topic, partition)] = PartitionState(windows, rates, next_offset)

    def _on_revoke(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._checkpoint(partitions)
            for tp in partitions:
                self._partitions.pop(tp, None)

    # -- the work ---------------------------------------------------------------------------
    def step(self, timeout_s: float = 0.5) -> int:
        """Poll once, apply what arrived, checkpoint when due; return the messages polled."""
        messages = self.consumer.poll(self._cfg.max_poll_records, timeout_s)
        with self._lock, cyclic_gc_paused():
            for message in messages:
                self._apply(message)
            self._close_windows()
            if time.monotonic() - self._last_checkpoint >= self._cfg.checkpoint_interval_seconds:
                self._checkpoint(set(self._partitions))
        return len(messages)

    def _apply(self, message: Message) -> None:
        state = self._partitions.get(message.topic_partition)
        if state is None:  # revoked while this batch was in flight: the new owner gets it
            return
        if message.offset < state.next_offset:
            self.stats.redelivered_skipped += 1
            return
        self.stats.messages += 1
        decoded = self.decoder.decode(message.value)
        if decoded.errors:
            self.stats.dead_letter_messages += 1
            self.stats.dead_letter_records += len(decoded.errors)
            self.producer.send(
                self._topics.dead_letter, message.value, message.key, dead_letter_headers(message, decoded.errors)
            )
        taken, late = state.ingest(decoded)
        for record in late:
            self._send_late(message, record)
        self.stats.records += taken
        state.next_offset = message.offset + 1
        state.last_record_at = time.monotonic()
        state.dirty = True

    def _send_late(self, message: Message, record: TelemetryRecord) -> None:
        self.stats.late_records += 1
        self.producer.send(
            self._topics.late,
            record.model_dump_json().encode(),
            record.series_id.encode(),
            [(DEAD_LETTER_REASON, b"late: its window had already closed"), (DEAD_LETTER_ORIGIN, message_origin(message))],
        )

    def _close_windows(self) -> None:
        idle = self._cfg.idle_close_seconds
        now = time.monotonic()
        for state in self._partitions.values():
            if idle is not None and now - state.last_record_at >= idle:
                self._publish(state.windows.close_all())
            else:
                self._publish(state.windows.close_ready())

    def close_all_windows(self) -> int:
        """Close every open window now (the end of a finite input); return how many closed."""
        with self._lock:
            before = self.stats.windows_emitted
            for state in self._partitions.values():
                self._publish(state.windows.close_all())
                state.dirty = True
            return self.stats.windows_emitted - before

    def _publish(self, points: list[SeriesPoint]) -> None:
        for point in points:
            self.producer.send(self._topics.series, point.model_dump_json().encode(), point.series_id.encode())
        self.stats.windows_emitted += len(points)

    def _checkpoint(self, partitions: set[TopicPartition]) -> None:
        """Flush outputs, persist state, then commit: in that order, so nothing is lost."""
        dirty = {tp: self._partitions[tp] for tp in partitions if tp in self._partitions and self._partitions[tp].dirty}
        self._last_checkpoint = time.monotonic()
        if not dirty:
            return
        self.producer.flush()
        self.checkpoints.save(
            self._cfg.group_id,
            [
                (t, p, s.next_offset, {"windows": s.windows.snapshot(), "rates": s.rates.snapshot()})
                for (t, p), s in dirty.items()
            ],
        )
        self.consumer.commit({tp: s.next_offset for tp, s in dirty.items()})
        for state in dirty.values():
            state.dirty = False
        self.stats.checkpoints += 1

    def run(self, stop: threading.Event, idle_exit_s: float | None = None) -> CollectorStats:
        """Work until ``stop`` is set, or until nothing arrived for ``idle_exit_s`` while this member
        held partitions (joining a group can take a session timeout after a crash), then checkpoint."""
        last_work = time.monotonic()
        try:
            while not stop.is_set():
                if self.step() or not self._partitions:
                    last_work = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - last_work >= idle_exit_s:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Checkpoint everything and leave the group (graceful shutdown)."""
        with self._lock:
            self._checkpoint(set(self._partitions))
        self.consumer.close()
        self.producer.flush()
        self.producer.close()
        self.checkpoints.close()

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)


def message_origin(message: Message) -> bytes:
    return f"{message.topic}/{message.partition}/{message.offset}".encode()
