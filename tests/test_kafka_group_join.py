"""A group member joins and follows its group's rebalances however briefly it polls.

kafka-python 3 runs a join as a task that outlives a short poll and discards the task once it is
done, so a member that never waits in ``poll`` (a busy service polls with no timeout) kept
rejoining and never held a partition, and a leader whose rejoin a metadata change asked for was
left stranded (see :meth:`nm_toolkit.bus.kafka.KafkaBusConsumer.poll`)."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions

from nm_toolkit.bus.base import Consumer, Message
from nm_toolkit.bus.kafka import KafkaBus

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
