"""Exactly-once services: outputs and input offsets commit in one transaction (embedded bus and the
real broker), and a member that dies mid-transaction leaves neither losses nor duplicates."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.base import Bus, Message
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import Emitter, StreamRunner, StreamService, Topic, run_until_idle
from tests.kafka_helpers import read_all


class Item(BaseModel):
    n: int


class Echo(StreamService):
    """Writes every item it reads to ``out``; with ``fail_commits`` the next commits fail."""

    name = "echo"
    exactly_once = True
    max_poll_records = 7

    def __init__(self, source: str, sink: str, group: str) -> None:
        self.source = Topic(source, Item)
        self.inputs = [self.source]
        self.sink = sink
        self.outputs = [sink]
        self.group_id = group
        self.dead_letter_topic = f"{source}.dlq"
        self.handled = 0

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        for message in messages:
            out.send(self.sink, self.source.decode(message), message.key)
        self.handled += len(messages)


def _names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{tag}.in", f"{tag}.out", f"echo-{tag}"


def _produce(bus: Bus, topic: str, count: int) -> None:
    producer = bus.producer()
    for n in range(count):
        producer.send(topic, Item(n=n).model_dump_json().encode(), str(n % 5).encode())
    producer.flush()
    producer.close()


def test_embedded_transaction_holds_outputs_until_commit_and_abort_rereads() -> None:
    bus = EmbeddedBus()
    source, sink, group = _names()
    _produce(bus, source, 30)
    runner = StreamRunner(bus, Echo(source, sink, group))
    runner.service.commit_interval_s = 3600  # commit only when asked
    while runner.step(timeout_s=0.01):
        pass
    assert runner.service.handled == 30 and bus.messages(sink) == []  # held in the open transaction

    real_commit = runner.producer.commit_offsets
    runner.producer.commit_offsets = lambda consumer, offsets: (_ for _ in ()).throw(RuntimeError("coordinator moved"))  # type: ignore[method-assign]
    runner.commit()  # fails: aborted, and reading starts again at the committed offsets
    assert runner.stats.transactions_aborted == 1 and bus.messages(sink) == []
    runner.producer.commit_offsets = real_commit  # type: ignore[method-assign]
    runner.service.commit_interval_s = 0
    run_until_idle([runner])
    runner.close()
    assert runner.service.handled == 60
    assert sorted(Item.model_validate_json(m.value).n for m in bus.messages(sink)) == list(range(30))


def test_kafka_member_dying_mid_transaction_leaves_each_output_exactly_once(kafka_bootstrap: str) -> None:
    bus = KafkaBus(kafka_bootstrap, session_timeout_ms=6000)
    source, sink, group = _names()
    bus.create_topics([source, sink], partitions=3)
    _produce(bus, source, 200)

    first = StreamRunner(bus, Echo(source, sink, group))
    first.service.commit_interval_s = 0
    while first.stats.commits < 3:
        first.step(timeout_s=0.5)
    first.service.commit_interval_s = 3600
    for _ in range(5):  # handled, sent, never committed
        first.step(timeout_s=0.2)
    assert first.producer.in_transaction
    # die with the outputs written but neither committed nor aborted: the group and the broker clean up
    first.producer.flush()
    first.consumer.close()
    first.producer._producer.close(timeout=0)  # type: ignore[attr-defined]  # noqa: SLF001

    second = StreamRunner(bus, Echo(source, sink, group))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (second.step(timeout_s=0.5) == 0 and second.progress(True).caught_up):
        pass
    second.close()
    got = Counter(Item.model_validate_json(m.value).n for m in read_all(bus, sink, 200, timeout_s=60))
    assert sorted(got) == list(range(200))
    assert set(got.values()) == {1}, {n: c for n, c in got.items() if c > 1}
