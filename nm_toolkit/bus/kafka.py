"""The bus on a real Kafka cluster, through kafka-python.

Producers keep kafka-python's defaults of idempotence and ``acks=all``; consumers never
auto-commit, so the services that use them commit only after their work is applied.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.base import MemberState
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from nm_toolkit.bus.base import (
    Bus,
    Consumer,
    DeliveryFailed,
    Message,
    PartitionsCallback,
    Producer,
    TopicPartition,
)
from nm_toolkit.errors import UserError

log = logging.getLogger(__name__)

METADATA_MAX_AGE_MS = 5_000
METADATA_WAIT_S = 30.0  # a consumer waits this long at most for its topics' partitions before it joins
TRANSACTION_TIMEOUT_MS = 10_000
JOIN_WAIT_S = 30.0  # a member rejoining its group waits this long in one poll for the join to finish


class BusUnavailable(UserError):
    """The Kafka cluster could not be reached; the message names the address to check."""


class KafkaBus(Bus):
    """Kafka at ``bootstrap_servers`` (``host:port[,host:port]``)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "nm-toolkit",
        default_partitions: int = 4,
        max_message_bytes: int = 1_048_576,
        session_timeout_ms: int = 6_000,
        heartbeat_interval_ms: int = 2_000,
        group_instance_id: str | None = None,
        compacted_topics: Iterable[str] = (),
    ) -> None:
        """``compacted_topics``: table topics, created (or switched to) ``cleanup.policy=compact``."""
        self.bootstrap_servers = bootstrap_servers
        self.compacted_topics = frozenset(compacted_topics)
        self.client_id = client_id
        self.default_partitions = default_partitions
        self.max_message_bytes = max_message_bytes
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.group_instance_id = group_instance_id
        self._cluster_id: str | None = None

    def _servers(self) -> list[str]:
        return self.bootstrap_servers.split(",")

    def _admin(self) -> KafkaAdminClient:
        try:
            return KafkaAdminClient(bootstrap_servers=self._servers(), client_id=self.client_id)
        except KafkaError as exc:
            raise BusUnavailable(
                f"cannot reach Kafka at {self.bootstrap_servers}: start a broker (nmt dev kafka) "
                "or set NMT_BUS__BOOTSTRAP_SERVERS"
            ) from exc

    def cluster_id(self) -> str:
        if self._cluster_id is None:
            admin = self._admin()
            try:
                self._cluster_id = str(admin.describe_cluster()["cluster_id"])
            finally:
                admin.close()
        return self._cluster_id

    def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        admin = self._admin()
        try:
            existing = set(admin.list_topics())
            wanted = list(dict.fromkeys(names))
            new = [
                NewTopic(name, partitions or self.default_partitions, 1, topic_configs=self._topic_configs(name))
                for name in wanted
                if name not in existing
            ]
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    log.debug("topics created concurrently: %s", [t.name for t in new])
            self._compact_existing(admin, [n for n in wanted if n in self.compacted_topics])
        finally:
            admin.close()

    def _topic_configs(self, name: str) -> dict[str, str]:
        return {"cleanup.policy": "compact"} if name in self.compacted_topics else {}

    @staticmethod
    def _compact_existing(admin: KafkaAdminClient, names: list[str]) -> None:
        """Switch table topics created before they were declared compacted (an upgrade, or another
        client that created one first), leaving their other settings alone."""
        if not names:
            return
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])  # non-default settings
        topics: dict[str, dict[str, dict[str, object]]] = next(iter(described.values()), {})
        stale = [name for name in names if topics.get(name, {}).get("cleanup.policy", {}).get("value") != "compact"]
        if stale:
            log.warning("switching table topics %s to cleanup.policy=compact", stale)
            # raise_on_unknown=False: kafka-python checks keys against the topic's dynamic configs
            # already set, and a topic on the broker's default cleanup.policy has none
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": "compact"}) for n in stale],
                incremental=True, raise_on_unknown=False,
            )  # fmt: skip

    def producer(self, transactional_group: str | None = None) -> Producer:
        settings: dict[str, object] = dict(
            bootstrap_servers=self._servers(),
            client_id=self.client_id,
            linger_ms=5,
            batch_size=256 * 1024,
            # The broker's message.max.bytes is the real limit; the client must not refuse to
            # dead-letter an oversized message the broker did accept.
            max_request_size=max(16 * 1024 * 1024, self.max_message_bytes + 64 * 1024),
        )
        if transactional_group is None:
            return KafkaBusProducer(KafkaProducer(**settings))
        # A static member keeps its transactional id across restarts, so a restart aborts the
        # transaction its crashed predecessor left open at once. Other members get a fresh id:
        # zombies are still fenced through the group's generation (KIP-447), and a crashed
        # member's open transaction is aborted by the broker after the transaction timeout,
        # which bounds how long read-committed readers of its outputs wait.
        suffix = self.group_instance_id or uuid.uuid4().hex[:12]
        producer = KafkaProducer(
            **settings, transactional_id=f"{transactional_group}.{suffix}", transaction_timeout_ms=TRANSACTION_TIMEOUT_MS
        )
        try:
            producer.init_transactions()
        except KafkaError as exc:
            producer.close()
            raise DeliveryFailed(f"cannot start transactions: {type(exc).__name__}: {exc}") from exc
        return KafkaBusTransactionalProducer(producer)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        max_poll_records: int = 1000,
    ) -> Consumer:
        consumer = KafkaConsumer(
            **self._reading(max_poll_records),
            group_id=group_id,
            # A member that died is noticed after the session timeout: it bounds how long its
            # partitions stand still before a restart or another member takes them over.
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            group_instance_id=self.group_instance_id,
            # kafka-python joins the group without waiting for the subscribed topics' metadata; a
            # leader that assigns before it arrives assigns nothing and only rejoins on the next
            # metadata refresh (CI saw a collector sit idle for a minute on a topic that existed).
            # Refreshing every few seconds bounds that stall, and finds new partitions quickly.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        # The group-join race where it starts: kafka-python joins without waiting for the topics'
        # metadata, and a leader that assigns before it arrives assigns nothing; under load (CI,
        # `stress --cpu 2`) the rejoin that the refresh above should bring did not come for minutes.
        # Joining once this client knows every topic's partitions leaves nothing to race.
        known = known_partitions(consumer, topics, METADATA_WAIT_S)
        if missing := [topic for topic in topics if not known.get(topic)]:
            log.warning("joining group %s before topics %s have partitions: they are assigned once they do", group_id, missing)
        consumer.subscribe(list(topics), listener=_Listener(on_assign, on_revoke))
        return KafkaBusConsumer(consumer)

    def _reading(self, max_poll_records: int) -> dict[str, object]:
        """What every consumer of this bus shares: no auto-commit, from the earliest offset
        without a committed one, and transactional outputs (exactly-once services) read only once
        committed (other topics are unaffected: their end is their last message)."""
        return dict(
            bootstrap_servers=self._servers(),
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            max_partition_fetch_bytes=max(4 * 1024 * 1024, self.max_message_bytes * 2),
            fetch_max_bytes=64 * 1024 * 1024,
            isolation_level="read_committed",
        )

    def reader(self, topics: Sequence[str], max_poll_records: int = 1000, timeout_s: float = 60.0) -> Consumer:
        consumer = KafkaConsumer(**self._reading(max_poll_records), group_id=None)
        known = known_partitions(consumer, topics, timeout_s)  # created by the caller
        if missing := [topic for topic in topics if not known.get(topic)]:
            consumer.close()
            raise DeliveryFailed(f"topic {missing[0]} has no partitions after {timeout_s:.0f} s: is it created?")
        partitions = [KafkaTopicPartition(topic, p) for topic in topics for p in sorted(known[topic])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return KafkaBusConsumer(consumer)


def known_partitions(consumer: KafkaConsumer, topics: Sequence[str], timeout_s: float) -> dict[str, set[int]]:
    """Each topic's partitions as ``consumer``'s metadata knows them, waiting up to ``timeout_s``
    in all for topics it does not know yet (a topic just created reaches a client's metadata late)."""
    deadline = time.monotonic() + timeout_s
    known: dict[str, set[int]] = {}
    for topic in topics:
        while not (found := consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
            time.sleep(0.2)
        known[topic] = set(found or ())
    return known


class KafkaBusProducer(Producer):
    """kafka-python's producer reports a failed send only on the send's future; this one keeps the
    first failure and raises it from :meth:`flush`, so a service never commits past a loss."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer
        self._failures: list[str] = []

    def _failed(self, topic: str, exc: BaseException) -> None:
        self._failures.append(f"{topic}: {type(exc).__name__}: {exc}")

    def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        try:
            future = self._producer.send(topic, value=value, key=key, headers=list(headers) or None)
        except KafkaError as exc:
            raise DeliveryFailed(f"cannot send to {topic}: {type(exc).__name__}: {exc}") from exc
        future.add_errback(lambda exc: self._failed(topic, exc))

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise DeliveryFailed(f"flush failed: {type(exc).__name__}: {exc}") from exc
        if self._failures:  # sticky: a later flush must not make it look as if they were written
            raise DeliveryFailed(f"{len(self._failures)} message(s) not written, first: {self._failures[0]}")

    def close(self) -> None:
        self._producer.close()


class KafkaBusTransactionalProducer(KafkaBusProducer):
    """Sends inside a Kafka transaction that :meth:`commit_offsets` commits together with the
    consumer group's offsets (KIP-447 fencing through the group metadata)."""

    def __init__(self, producer: KafkaProducer) -> None:
        super().__init__(producer)
        self._open = False

    def _begin(self) -> None:
        if not self._open:
            self._producer.begin_transaction()
            self._open = True

    def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        try:
            self._begin()
        except KafkaError as exc:
            raise DeliveryFailed(f"cannot begin a transaction: {type(exc).__name__}: {exc}") from exc
        super().send(topic, value, key, headers)

    @property
    def in_transaction(self) -> bool:
        return self._open

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        if not isinstance(consumer, KafkaBusConsumer):
            raise TypeError("a Kafka transaction commits the offsets of a Kafka consumer")
        self._begin()
        if offsets:
            self._producer.send_offsets_to_transaction(
                {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
                consumer._consumer.group_metadata(),
            )
        self._producer.commit_transaction()
        self._open = False
        self._failures.clear()

    def abort(self) -> bool:
        if self._open:
            self._producer.abort_transaction()
            self._open = False
        self._failures.clear()
        return True


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assign: PartitionsCallback | None, on_revoke: PartitionsCallback | None) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Iterable[KafkaTopicPartition]) -> None:
        if self._on_revoke and revoked:
            self._on_revoke({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        if self._on_assign and assigned:
            self._on_assign({(tp.topic, tp.partition) for tp in assigned})


def is_transient(exc: BaseException) -> bool:
    """Whether a kafka-python error says "not now" (the broker restarts, a leader moves: connection
    refused and timeouts are among these) rather than "never": a service waits and retries these
    instead of stopping."""
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class KafkaBusConsumer(Consumer):
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Messages that arrived; none while the cluster cannot be reached (kafka-python 3 raises
        connection errors out of poll during a broker restart: the member keeps its place and
        waits, as the Java client does)."""
        try:
            self._finish_join()
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            if not is_transient(exc):
                raise
            log.warning("Kafka unreachable while polling (%s: %s); retrying", type(exc).__name__, exc)
            time.sleep(min(timeout_s, 1.0))
            return []
        return [
            Message(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                b"" if r.value is None else r.value,  # a null value (tombstone) is an empty message
                r.timestamp,
                tuple((k, v) for k, v in r.headers) if r.headers else (),
            )
            for records in batches.values()
            for r in records
        ]

    def _finish_join(self) -> None:
        """See a group join begun by an earlier poll through to its assignment.

        kafka-python 3 (3.0.12) runs a join as a task that outlives a short poll. The next poll
        awaits it again only while the coordinator still says a rejoin is needed, and sends a new
        JoinGroup when it finds the task already done, dropping that result. So a member polling
        with no timeout (a busy service) rejoins forever and never holds a partition, and a
        leader whose rejoin a metadata change asked for clears that need in its own assignment
        and is stranded: no partitions, no heartbeats, evicted. Seen beside ``stress --cpu 2``:
        a restarted edge held nothing for minutes. Java's client keeps the join until it is
        applied; this does the same by waiting for it here, where nothing is owned anyway."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if getattr(coordinator, "_join_task", None) is None:
            return
        coordinator.request_rejoin()  # keep the join wanted until it is applied
        coordinator.ensure_active_group(timeout_ms=int(JOIN_WAIT_S * 1000))

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            self._consumer.commit(
                {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )

    def committed(self, partition: TopicPartition) -> int | None:
        found = self._consumer.committed(KafkaTopicPartition(*partition))
        return None if found is None else int(found)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTopicPartition(*partition), offset)

    def seek_to_beginning(self, partition: TopicPartition) -> None:
        self._consumer.seek_to_beginning(KafkaTopicPartition(*partition))

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._consumer.highwater(KafkaTopicPartition(*partition))

    def position(self, partition: TopicPartition) -> int | None:
        # consumer.position() may block on the coordinator; the subscription state never does.
        try:
            state = self._consumer._subscription.position(KafkaTopicPartition(*partition))
        except (AttributeError, KeyError):
            return None
        return None if state is None else int(state.offset)

    def log_end(self, partitions: Collection[TopicPartition], timeout_s: float) -> dict[TopicPartition, int] | None:
        try:
            ends = self._consumer.end_offsets([KafkaTopicPartition(*tp) for tp in partitions], timeout_ms=int(timeout_s * 1000))
        except KafkaError:  # the broker cannot say in time (it is down, or the leader moved): not known
            return None
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    def healthy(self) -> bool:
        # kafka-python has no public probe; read (without side effects) whether the group
        # coordinator is known and connected and this member is stable in the group (not
        # rejoining: its partitions are not fetched then). If its internals ever change, assume healthy.
        try:
            coordinator = self._consumer._coordinator
            node = coordinator.coordinator_id
            stable = coordinator.state == MemberState.STABLE and not coordinator.rejoin_needed
            return node is not None and stable and bool(self._consumer._client.connected(node))
        except AttributeError:
            return True

    def close(self) -> None:
        self._consumer.close(autocommit=False)
