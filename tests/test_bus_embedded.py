from nm_toolkit.bus import EmbeddedBus


def test_keyed_messages_keep_partition_and_order() -> None:
    bus = EmbeddedBus(default_partitions=3)
    producer = bus.producer()
    for i in range(30):
        producer.send("t", f"{i}".encode(), key=f"k{i % 5}".encode())
    messages = bus.messages("t")
    assert len(messages) == 30
    by_key: dict[bytes, set[int]] = {}
    for m in messages:
        by_key.setdefault(m.key or b"", set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_uncommitted_messages_are_redelivered_to_the_next_member() -> None:
    bus = EmbeddedBus(default_partitions=2)
    producer = bus.producer()
    for i in range(10):
        producer.send("t", str(i).encode(), key=str(i).encode())
    first = bus.consumer(["t"], "g")
    got = first.poll(100, 0.1)
    assert len(got) == 10
    # commit only the first message of each partition, then leave
    first.commit({m.topic_partition: m.offset + 1 for m in got if m.offset == 0})
    first.close()
    second = bus.consumer(["t"], "g")
    again = second.poll(100, 0.1)
    assert sorted(int(m.value) for m in again) == sorted(int(m.value) for m in got if m.offset > 0)


def test_group_members_split_partitions_and_rebalance_on_leave() -> None:
    bus = EmbeddedBus(default_partitions=4)
    revoked: list[set] = []
    a = bus.consumer(["t"], "g", on_revoke=revoked.append)
    b = bus.consumer(["t"], "g")
    assert a.assignment() | b.assignment() == {("t", p) for p in range(4)}
    assert not a.assignment() & b.assignment()
    b.close()
    assert a.assignment() == {("t", p) for p in range(4)}
    assert revoked, "the first member's partitions were revoked when the second joined"
