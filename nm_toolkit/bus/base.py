"""The message-bus interface every service talks to, whatever carries the messages.

Two implementations share it: :mod:`nm_toolkit.bus.embedded` (in-process, for the demo, tests of
pure logic, and single-machine use) and :mod:`nm_toolkit.bus.kafka` (kafka-python against a real
cluster). Offsets follow Kafka's convention: a committed offset is the *next* one to read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

TopicPartition = tuple[str, int]
Headers = tuple[tuple[str, bytes], ...]
PartitionsCallback = Callable[[set[TopicPartition]], None]


@dataclass(frozen=True, slots=True)
class Message:
    """One message read from a topic partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: Headers = ()

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class DeliveryFailed(RuntimeError):
    """A message could not be written to the bus. Nothing read before it may be committed, so a
    service that sees this stops (exit code 1) and a restart redelivers from the last commit."""


class Producer(ABC):
    """Sends messages; ``flush`` returns once everything sent so far is durably written, and
    raises :class:`DeliveryFailed` if anything sent since the last flush was not."""

    @abstractmethod
    def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Queue ``value`` for ``topic``; None is a tombstone (on a compacted table topic it deletes
        ``key``; consumers read it as an empty message)."""

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None: ...

    @property
    def in_transaction(self) -> bool:
        """Whether messages sent since the last :meth:`commit_offsets` wait for it to be visible."""
        return False

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``consumer``'s ``offsets`` as the input behind what this producer sent (already
        flushed). A transactional producer makes the two visible together, atomically: the
        consume-transform-produce cycle is then exactly-once. This one commits the offsets alone."""
        consumer.commit(offsets)

    def abort(self) -> bool:
        """Discard what was sent since the last commit, if this producer can (a transactional one);
        returns whether it did. The caller then reads again from the committed offsets."""
        return False

    @abstractmethod
    def close(self) -> None: ...


class Consumer(ABC):
    """A consumer-group member; it never commits on its own, callers commit after their work."""

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[Message]: ...

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    @abstractmethod
    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    @abstractmethod
    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition`` (None: nothing committed yet)."""

    def seek_to_beginning(self, partition: TopicPartition) -> None:
        """Read ``partition`` again from its first retained message."""
        self.seek(partition, 0)

    @abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abstractmethod
    def highwater(self, partition: TopicPartition) -> int | None:
        """The offset after the last message of ``partition`` as last seen (None: not known yet)."""

    @abstractmethod
    def position(self, partition: TopicPartition) -> int | None:
        """The offset the next fetch of ``partition`` starts at (None: not known yet), without
        waiting for the bus."""

    def log_end(self, partitions: Collection[TopicPartition], timeout_s: float) -> dict[TopicPartition, int] | None:
        """The end offsets of ``partitions`` in the log now, asked of the bus (None: it cannot say
        within ``timeout_s``). Unlike :meth:`highwater` this is never stale: after an outage, the
        last fetch's end says nothing of what was written since."""
        ends = {tp: self.highwater(tp) for tp in partitions}
        return None if any(end is None for end in ends.values()) else ends  # type: ignore[return-value]

    def healthy(self) -> bool:
        """Whether the consumer is in touch with its group coordinator and a stable member of its
        group: time without messages only means "no data" while this holds (a broker outage, or
        a rejoin after one, is not idleness)."""
        return True

    @abstractmethod
    def close(self) -> None: ...


class Bus(ABC):
    """A factory of producers and consumers over one cluster (or one process)."""

    durable: bool = True
    """Whether messages outlive this process (so state checkpointed against offsets stays valid)."""
    max_message_bytes: int = 1_048_576
    """The largest message the bus accepts (Kafka: the broker's ``message.max.bytes``)."""

    @abstractmethod
    def cluster_id(self) -> str:
        """Identifies the cluster, so offsets checkpointed against one are never used on another."""

    @abstractmethod
    def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""

    @abstractmethod
    def producer(self, transactional_group: str | None = None) -> Producer:
        """A producer; with ``transactional_group``, a transactional one whose sends become visible
        only with the commit of that group's offsets (:meth:`Producer.commit_offsets`)."""

    @abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        max_poll_records: int = 1000,
    ) -> Consumer:
        """Join ``group_id`` reading ``topics`` from the committed offsets (or the beginning).

        ``on_assign`` and ``on_revoke`` may run on the client's own IO thread (kafka-python 3):
        they must not block on the bus (no commit, no flush); seeking is fine."""

    @abstractmethod
    def reader(self, topics: Sequence[str], max_poll_records: int = 1000) -> Consumer:
        """Read every partition of ``topics`` (existing ones) from the beginning, outside any
        group: what every replica of a service must see (its site's decisions, its probe echoes),
        not a share of the work. It commits nothing."""

    def close(self) -> None:
        """Release shared resources; producers and consumers are closed by their owners."""
