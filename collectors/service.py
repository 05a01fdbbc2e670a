"""The telemetry collector: a stream service that turns the telemetry topic into series.

Per batch it decodes and validates every message, aggregates good records into tumbling windows,
publishes closed windows to the series topic, dead-letters what it cannot use (original bytes,
reason in headers) and routes late records to the late topic. The runtime
(:mod:`nm_toolkit.bus.runtime`) commits every ``checkpoint_interval_seconds``, after flushing what
was produced and after :meth:`TelemetryCollector.checkpoint` saved the window state with the next
offsets: at-least-once delivery, made exactly-once for the aggregates by resuming from the
checkpoint and skipping redelivered offsets below it.

State moves with its partition: when a partition is assigned, its checkpoint is restored and
reading resumes at the checkpoint's offset; without a checkpoint the partition is read from the
beginning, rebuilding its windows. Members of one group should therefore share ``state_dir`` (one
host, or a shared filesystem); members on hosts with separate state directories stay correct but
replay a partition's retained history whenever it moves to a host that never held it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from collectors.decode import Decoded, TelemetryDecoder
from collectors.gnmi import CounterRates
from collectors.windowing import TumblingWindows
from nm_toolkit.bus import Bus, Message, TopicPartition
from nm_toolkit.bus.checkpoints import CheckpointStore
from nm_toolkit.bus.deadletter import ORIGIN, REASON, message_origin
from nm_toolkit.bus.runtime import Emitter, Progress, StreamService, Topic
from nm_toolkit.config import CollectorSettings, Settings
from nm_toolkit.schemas import SeriesPoint, TelemetryRecord

log = logging.getLogger(__name__)


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


MAX_IDLE_STEP_S = 1.0  # the most idleness one tick adds (the loop polls every 0.5 s when nothing arrives)


class PartitionState:
    """What the collector keeps per assigned partition: windows, counter readings, next offset."""

    def __init__(self, windows: TumblingWindows, rates: CounterRates, next_offset: int = 0) -> None:
        self.windows = windows
        self.rates = rates
        self.next_offset = next_offset
        self.idle_s = 0.0  # seconds of this collector's own running without a record here (see TelemetryCollector.tick)
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


class TelemetryCollector(StreamService):
    """Window ``input_topic`` into series in group ``config.group_id``.

    ``series_topic`` gets closed windows, ``late_topic`` records behind a closed window and
    ``dead_letter_topic`` what cannot be used. The intent service runs a second collector over
    its demand topic with its own group and windows.
    """

    name = "collector"

    def __init__(
        self,
        config: CollectorSettings,
        *,
        input_topic: str,
        series_topic: str,
        late_topic: str,
        dead_letter_topic: str,
        checkpoints: CheckpointStore,
        name: str = "collector",
    ) -> None:
        self.config = config
        self.name = name
        self.group_id = config.group_id
        self.dead_letter_topic = dead_letter_topic
        self.inputs = [Topic(input_topic)]
        self.series_topic = series_topic
        self.late_topic = late_topic
        self.outputs = [series_topic, late_topic]
        self.max_poll_records = config.max_poll_records
        self.commit_interval_s = config.checkpoint_interval_seconds
        self.decoder = TelemetryDecoder(
            max_message_bytes=config.max_message_bytes,
            min_timestamp=datetime.fromisoformat(config.min_timestamp),
            max_future_seconds=config.max_future_seconds,
        )
        self.checkpoints = checkpoints
        self.counters = CollectorStats()
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._last_tick = time.monotonic()

    # -- partition lifecycle ---------------------------------------------------------------
    def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Restore each partition's checkpoint and resume at its offset; without one, read the
        partition from the beginning (its windows are rebuilt from the log)."""
        resume: dict[TopicPartition, int | None] = {}
        for topic, partition in partitions:
            windows = TumblingWindows(self.config.window_seconds, self.config.allowed_lateness_seconds)
            rates = CounterRates()
            saved = self.checkpoints.load(self.group_id, topic, partition)
            next_offset = 0
            if saved is not None:
                next_offset, state = saved
                windows.restore(state["windows"])
                rates.restore(state["rates"])
            self._partitions[(topic, partition)] = PartitionState(windows, rates, next_offset)
            resume[(topic, partition)] = next_offset if saved is not None else None
        return resume

    def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)

    # -- the work ---------------------------------------------------------------------------
    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        with cyclic_gc_paused():
            for message in messages:
                self._apply(message, out)

    def _apply(self, message: Message, out: Emitter) -> None:
        state = self._partitions.get(message.topic_partition)
        if state is None:  # revoked while this batch was in flight: the new owner gets it
            return
        if message.offset < state.next_offset:
            self.counters.redelivered_skipped += 1
            return
        self.counters.messages += 1
        decoded = self.decoder.decode(message.value)
        if decoded.errors:
            self.counters.dead_letter_messages += 1
            self.counters.dead_letter_records += len(decoded.errors)
            out.dead_letter(message, decoded.errors)
        taken, late = state.ingest(decoded)
        for record in late:
            self._send_late(message, record, out)
        self.counters.records += taken
        state.next_offset = message.offset + 1
        state.idle_s = 0.0
        state.dirty = True

    def _send_late(self, message: Message, record: TelemetryRecord, out: Emitter) -> None:
        self.counters.late_records += 1
        out.send(
            self.late_topic, record, record.series_id,
            [(REASON, b"late: its window had already closed"), (ORIGIN, message_origin(message).encode())],
        )  # fmt: skip

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """Close windows the watermark passed, and every window of a partition that saw no
        record for ``idle_close_seconds`` while it was really idle: its consumer a stable group
        member in touch with the broker, and the partition fetched up to its end (an outage, a
        rejoin, or a backlog not fetched yet is not idleness), that end confirmed by the broker
        before the windows close (records written during an outage are in no fetch yet). An idle
        close depends on the clock, not on the log, so it is checkpointed at once: a replay after
        a crash must not close the same windows differently."""
        idle = self.config.idle_close_seconds
        now = time.monotonic()
        # Idleness accrues while this loop runs, at most MAX_IDLE_STEP_S a tick: a process that was
        # starved of CPU (or paused) for longer did not watch the partition meanwhile, and the first
        # poll after the pause may come back empty while the fetch that brings the records is in flight.
        elapsed = min(max(0.0, now - self._last_tick), MAX_IDLE_STEP_S)
        self._last_tick = now
        for tp, state in self._partitions.items():
            state.idle_s = 0.0 if not progress.healthy or tp in progress.unfetched else state.idle_s + elapsed
        due = [tp for tp, state in self._partitions.items() if idle is not None and state.idle_s >= idle and state.windows.open_windows]
        # The end the last fetch saw may predate an outage: the log itself must say nothing waits
        idle_at_end = progress.at_log_end(due) if due else frozenset()
        for tp, state in self._partitions.items():
            if tp in idle_at_end:
                self._publish(state.windows.close_all(), out)
                state.dirty = True
            else:
                if tp in due:  # records wait in the log: not idle
                    state.idle_s = 0.0
                self._publish(state.windows.close_ready(), out)
        return bool(idle_at_end)

    def close_all_windows(self, out: Emitter) -> int:
        """Close every open window now (the end of a finite input); return how many closed."""
        before = self.counters.windows_emitted
        for state in self._partitions.values():
            self._publish(state.windows.close_all(), out)
            state.dirty = True
        return self.counters.windows_emitted - before

    def _publish(self, points: list[SeriesPoint], out: Emitter) -> None:
        for point in points:
            out.send(self.series_topic, point, point.series_id)
        self.counters.windows_emitted += len(points)

    def checkpoint(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Persist the windows and counter readings of every partition changed since the last
        checkpoint, with the next offset each state includes."""
        dirty = {tp: s for tp, s in self._partitions.items() if s.dirty}
        if not dirty:
            return
        self.checkpoints.save(
            self.group_id,
            [
                (t, p, s.next_offset, {"windows": s.windows.snapshot(), "rates": s.rates.snapshot()})
                for (t, p), s in dirty.items()
            ],
        )
        for state in dirty.values():
            state.dirty = False
        self.counters.checkpoints += 1

    def stats(self) -> dict[str, float]:
        return asdict(self.counters) | {"open_windows": sum(s.windows.open_windows for s in self._partitions.values())}

    def close(self) -> None:
        self.checkpoints.close()


def telemetry_collector(settings: Settings, bus: Bus) -> TelemetryCollector:
    """The telemetry collector the settings describe."""
    topics = settings.topics
    return TelemetryCollector(
        settings.collector,
        input_topic=topics.telemetry,
        series_topic=topics.series,
        late_topic=topics.late,
        dead_letter_topic=topics.dead_letter,
        checkpoints=CheckpointStore.for_service(settings.state_dir, bus, "collector"),
    )
