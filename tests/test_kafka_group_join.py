"""A group member joins and follows its group's rebalances however briefly it polls.

kafka-python 3 runs a join as a task that outlives a short poll and discards the task once it is
done, so a member that never waits in ``poll`` (a busy service polls with no timeout) kept
rejoining and never held a partition, and a leader whose rejoin a metadata change asked for was
left stranded (see :meth:`nm_toolkit.bus.kafka.KafkaBusConsumer.poll`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions
from pydantic import BaseModel

from nm_toolkit.bus.base import Consumer, Message, TopicPartition
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import Emitter, StreamRunner, StreamService, Topic

pytestmark = pytest.mark.kafka

DEADLINE_S = 120


def _poll_without_waiting(consumer: Consumer, until: int) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < until and time.monotonic() < deadline:
        got.extend(consumer.poll(100, 0.0))
        time.sleep(0.02)
    return got


def test_a_member_that_never_waits_in_poll_joins_and_follows_new_partitions(kafka_bootstrap: str) -> None:
    bus = KafkaBus(kafka_bootstrap)
    topic = f"join-{uuid.uuid4().hex[:8]}"
    bus.create_topics([topic], partitions=2)
    producer = bus.producer()
    for i in range(4):
        producer.send(topic, f"m{i}".encode(), f"k{i}".encode())
    producer.flush()
    consumer = bus.consumer([topic], f"join-{uuid.uuid4().hex[:8]}")
    try:
        assert sorted(m.value for m in _poll_without_waiting(consumer, 4)) == [b"m0", b"m1", b"m2", b"m3"]
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:  # the leader's metadata changes: it rejoins, and assigns the new partition
            admin.create_partitions({topic: NewPartitions(total_count=3)})
        finally:
            admin.close()
        producer.close()
        producer = bus.producer()  # one that knows the three partitions; 30 keys cover them
        for i in range(30):
            producer.send(topic, f"n{i}".encode(), f"n{i}".encode())
        producer.flush()
        got = _poll_without_waiting(consumer, 30)
        assert sorted(m.value for m in got) == sorted(f"n{i}".encode() for i in range(30))
        assert 2 in {m.partition for m in got}
        assert consumer.healthy()
    finally:
        consumer.close()
        producer.close()


class Held(BaseModel):
    text: str


class Holder(StreamService):
    """Holds every message it reads (a cloud batch still generating): nothing of it may be committed."""

    name = "holder"
    max_poll_records = 100

    def __init__(self, source: str, group: str) -> None:
        self.inputs = [Topic(source, Held)]
        self.outputs = []
        self.group_id = group
        self.dead_letter_topic = f"{source}.dlq"
        self.held: list[bytes] = []

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        self.held += [m.value for m in messages]

    def committable(self, pending: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, int]:
        return {}

    def revoked(self, partitions: set[TopicPartition]) -> None:
        self.held = []  # one partition here: all of it goes


def test_a_partition_revoked_and_then_assigned_again_is_read_again_from_its_commit(kafka_bootstrap: str) -> None:
    """The bus may report a rebalance's revoke and its assignment in different polls (a join that
    outlived a poll); kafka-python 3 keeps the partition's fetch position, past the messages the
    service dropped at the revoke. They are read again: dropped is not done."""
    bus = KafkaBus(kafka_bootstrap)
    topic, group = f"held-{uuid.uuid4().hex[:8]}", f"held-{uuid.uuid4().hex[:8]}"
    bus.create_topics([topic], partitions=1)
    producer = bus.producer()
    for i in range(5):
        producer.send(topic, f"m{i}".encode(), b"k")
    producer.flush()
    producer.close()
    service = Holder(topic, group)
    runner = StreamRunner(bus, service)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(service.held) < 5 and time.monotonic() < deadline:
            runner.step(timeout_s=0.2)
        assert service.held == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        partition = {(topic, 0)}
        runner._on_revoke(partition)  # what the bus's rebalance listener reports, one poll apart
        runner.step(timeout_s=0.2)
        assert service.held == []
        runner._on_assign(partition)
        deadline = time.monotonic() + DEADLINE_S
        while len(service.held) < 5 and time.monotonic() < deadline:
            runner.step(timeout_s=0.2)
        assert service.held == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    finally:
        runner.close()
