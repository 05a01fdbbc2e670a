"""An in-process bus with Kafka's semantics: partitioned logs, consumer groups, committed offsets.

It lets the whole loop run with no broker (``make demo``) while exercising the same code paths as
Kafka: keyed partitioning (Kafka's murmur2), at-least-once redelivery from the last commit after a
consumer leaves, and rebalancing callbacks when members join or leave a group.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

from kafka.partitioner.default import murmur2

from nm_toolkit.bus.base import (
    Bus,
    Consumer,
    Message,
    PartitionsCallback,
    Producer,
    TopicPartition,
)


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """Kafka's default partitioner: murmur2 of the key, round-robin when there is none."""
    if key is None:
        return counter % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class EmbeddedBus(Bus):
    """All topics live in this object's memory; thread-safe."""

    durable = False

    def __init__(self, default_partitions: int = 4) -> None:
        self.default_partitions = default_partitions
        self._cluster_id = f"embedded-{uuid.uuid4().hex}"
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._groups: dict[str, list[_EmbeddedConsumer]] = {}
        self._cond = threading.Condition()
        self._unkeyed = 0

    def cluster_id(self) -> str:
        return self._cluster_id

    # -- topics ---------------------------------------------------------------------------
    def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        with self._cond:
            for name in names:
                self._ensure(name, partitions)

    def _ensure(self, topic: str, partitions: int | None = None) -> list[list[Message]]:
        log = self._logs.get(topic)
        if log is None:
            log = [[] for _ in range(partitions or self.default_partitions)]
            self._logs[topic] = log
            for group in self._groups:
                self._rebalance(group)
        return log

    def messages(self, topic: str) -> list[Message]:
        """Every message of a topic, partition by partition (for inspection and tests)."""
        with self._cond:
            return [m for log in self._ensure(topic) for m in log]

    # -- producing ------------------------------------------------------------------------
    def _append(self, topic: str, value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        with self._cond:
            log = self._ensure(topic)
            self._unkeyed += key is None
            partition = partition_for(key, len(log), self._unkeyed)
            part = log[partition]
            part.append(
                Message(topic, partition, len(part), key, value or b"", int(time.time() * 1000), tuple(headers))
            )
            self._cond.notify_all()

    def producer(self, transactional_group: str | None = None) -> Producer:
        return _EmbeddedProducer(self, transactional=transactional_group is not None)

    # -- consuming ------------------------------------------------------------------------
    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        max_poll_records: int = 1000,
    ) -> Consumer:
        member = _EmbeddedConsumer(self, tuple(topics), group_id, on_assign, on_revoke)
        with self._cond:
            for topic in topics:
                self._ensure(topic)
            self._committed.setdefault(group_id, {})
            self._groups.setdefault(group_id, []).append(member)
            self._rebalance(group_id)
        return member

    def reader(self, topics: Sequence[str], max_poll_records: int = 1000) -> Consumer:
        return _EmbeddedReader(self, topics)

    def _rebalance(self, group_id: str) -> None:
        members = self._groups.get(group_id, [])
        topics = sorted({t for m in members for t in m.topics})
        partitions = [(t, p) for t in topics for p in range(len(self._logs.get(t, [])))]
        for member in members:
            member._set_assignment(set())
        for i, tp in enumerate(partitions):
            eligible = [m for m in members if tp[0] in m.topics]
            if eligible:
                eligible[i % len(eligible)]._pending.add(tp)
        for member in members:
            member._set_assignment(member._pending)
            member._pending = set()

    def _leave(self, member: _EmbeddedConsumer) -> None:
        with self._cond:
            members = self._groups.get(member.group_id, [])
            if member in members:
                members.remove(member)
                member._set_assignment(set())
                self._rebalance(member.group_id)


class _EmbeddedProducer(Producer):
    """Appends at once; a transactional one holds its sends until the offsets commit with them."""

    def __init__(self, bus: EmbeddedBus, transactional: bool = False) -> None:
        self._bus = bus
        self._transactional = transactional
        self._held: list[tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]] = []

    def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        if self._transactional:
            self._held.append((topic, value, key, headers))
        else:
            self._bus._append(topic, value, key, headers)

    def flush(self, timeout_s: float | None = None) -> None:
        """Appends are synchronous, so there is never anything in flight."""

    @property
    def in_transaction(self) -> bool:
        return bool(self._held)

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        with self._bus._cond:  # re-entrant: appends and the commit happen as one step
            for topic, value, key, headers in self._held:
                self._bus._append(topic, value, key, headers)
            self._held.clear()
            consumer.commit(offsets)

    def abort(self) -> bool:
        self._held.clear()
        return self._transactional

    def close(self) -> None:
        """Nothing to release."""


class _EmbeddedReader(Consumer):
    """Every partition of its topics from the beginning, in no group (see :meth:`Bus.reader`);
    the group consumer below is one whose partitions the group assigns."""

    def __init__(self, bus: EmbeddedBus, topics: Sequence[str] = ()) -> None:
        self._bus = bus
        self._closed = False
        with bus._cond:
            self._positions: dict[TopicPartition, int] = {(t, p): 0 for t in topics for p in range(len(bus._ensure(t)))}

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        with self._bus._cond:
            while True:
                out: list[Message] = []
                for tp in sorted(self._positions):
                    log = self._bus._logs[tp[0]][tp[1]]
                    pos = self._positions[tp]
                    take = log[pos : pos + max_records - len(out)]
                    out.extend(take)
                    self._positions[tp] = pos + len(take)
                    if len(out) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self._closed:
                    return out
                self._bus._cond.wait(remaining)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """A reader commits nothing."""

    def committed(self, partition: TopicPartition) -> int | None:
        return None

    def seek(self, partition: TopicPartition, offset: int) -> None:
        with self._bus._cond:
            if partition not in self._positions:
                raise ValueError(f"partition {partition} is not assigned to this consumer")
            self._positions[partition] = offset

    def assignment(self) -> set[TopicPartition]:
        with self._bus._cond:
            return set(self._positions)

    def position(self, partition: TopicPartition) -> int | None:
        with self._bus._cond:
            return self._positions.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        with self._bus._cond:
            return len(self._bus._logs[partition[0]][partition[1]])

    def close(self) -> None:
        self._closed = True


class _EmbeddedConsumer(_EmbeddedReader):
    def __init__(
        self,
        bus: EmbeddedBus,
        topics: tuple[str, ...],
        group_id: str,
        on_assign: PartitionsCallback | None,
        on_revoke: PartitionsCallback | None,
    ) -> None:
        super().__init__(bus)
        self.topics = topics
        self.group_id = group_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._pending: set[TopicPartition] = set()

    def _set_assignment(self, partitions: set[TopicPartition]) -> None:
        old = set(self._positions)
        revoked, added = old - partitions, partitions - old
        if revoked and self._on_revoke:
            self._on_revoke(revoked)
        committed = self._bus._committed.setdefault(self.group_id, {})
        for tp in revoked:
            del self._positions[tp]
        for tp in added:
            self._positions[tp] = committed.get(tp, 0)
        if added and self._on_assign:
            self._on_assign(added)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        with self._bus._cond:
            committed = self._bus._committed.setdefault(self.group_id, {})
            for tp, offset in offsets.items():
                if tp in self._positions:
                    committed[tp] = offset

    def committed(self, partition: TopicPartition) -> int | None:
        with self._bus._cond:
            return self._bus._committed.get(self.group_id, {}).get(partition)

    def close(self) -> None:
        self._closed = True
        self._bus._leave(self)
