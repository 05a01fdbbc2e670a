"""The cloud service on the embedded bus: continuous batching, answers released in offset order,
offsets committed only up to the first unanswered request."""

from __future__ import annotations

import json
from pathlib import Path

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.llm.cloud_service import CloudService
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.netgpt import CloudResponder


def request(i: int, **extra: object) -> bytes:
    body = {"request_id": f"c-{i}", "text": f"Recommend a cafe near me in Brera this morning. ({i})", "edge": "edge-0",
            "edge_sent_ms": 1.0, "arrived_ms": 1.0, **extra}  # fmt: skip
    return json.dumps(body).encode()


def service(tiny_llms: Path, max_new_tokens: int = 6, lm: AdapterLM | None = None) -> CloudService:
    responder = CloudResponder(lm or AdapterLM.load(tiny_llms / "cloud"), GenerationLimits(max_new_tokens=max_new_tokens))
    return CloudService(
        responder, requests_topic="cloud", answers_topic="answers", status_topic="status", group_id="cloud", dead_letter_topic="cloud.dlq",
        max_batch=4,
    )  # fmt: skip


def test_every_request_answered_once_in_partition_order_with_probes_and_rejects(tiny_llms: Path) -> None:
    bus = EmbeddedBus(default_partitions=2)
    bus.create_topics(["answers"], partitions=1)  # one log: the order answers were released in
    producer = bus.producer()
    for i in range(12):
        producer.send("cloud", request(i), f"k{i % 3}".encode())
    producer.send("cloud", request(99, kind="probe", padding="x" * 100), b"k0")
    producer.send("cloud", b"{not json", b"k1")
    producer.send("cloud", request(100, tenant="nobody"), b"k2")  # no adapter for that tenant
    runner = StreamRunner(bus, service(tiny_llms))
    run_until_idle([runner])
    runner.finish()
    runner.commit()
    stats = runner.stats_dict()
    runner.close()
    answers = [json.loads(m.value) for m in bus.messages("answers")]
    ok = [a for a in answers if a["status"] == "ok"]
    assert sorted(a["request_id"] for a in ok) == sorted(f"c-{i}" for i in range(12))
    assert all(a["served_by"] == "cloud" and a["bytes_edge_to_cloud"] > 0 for a in ok)
    errors = [a for a in answers if a["status"] == "error"]
    assert len(errors) == 2 and any("nobody" in a["reason"] for a in errors)
    assert len(bus.messages("cloud.dlq")) == 2
    [echo] = [json.loads(m.value) for m in bus.messages("status")]
    assert echo["probe_id"] == "c-99" and echo["probe_bytes"] > 100
    assert stats["answers"] == 12 and stats["errors"] == 2 and stats["probes"] == 1 and stats["decode_steps"] > 0
    # released in each partition's offset order, whatever order generation finished in
    by_partition: dict[int, list[int]] = {}
    for m in bus.messages("cloud"):
        by_partition.setdefault(m.partition, []).append(m.offset)
    order = {json.loads(m.value)["request_id"]: (m.partition, m.offset) for m in bus.messages("cloud") if m.value.startswith(b'{"')}
    for partition in by_partition:
        released = [order[a["request_id"]][1] for a in answers if a.get("request_id") in order and order[a["request_id"]][0] == partition]
        assert released == sorted(released)


def test_offsets_are_held_at_the_first_request_still_generating(tiny_llms: Path) -> None:
    """Whatever a step gets through on a busy machine, a commit never passes a request that has
    no answer yet: the committed offset is the count of answers released, in offset order."""
    bus = EmbeddedBus(default_partitions=1)
    producer = bus.producer()
    for i in range(3):
        producer.send("cloud", request(i))
    runner = StreamRunner(bus, service(tiny_llms, max_new_tokens=40))
    runner.service.commit_interval_s = 3600
    consumer = runner.consumer
    commits = 0
    while True:
        runner.step(timeout_s=0.01)
        runner.commit()
        commits += 1
        released = [json.loads(m.value)["request_id"] for m in bus.messages("answers")]
        assert released == [f"c-{i}" for i in range(len(released))]  # in offset order
        assert (consumer.committed(("cloud", 0)) or 0) == len(released), f"commit {commits}"
        if not runner.service.busy and len(released) == 3:
            break
        assert commits < 10_000
    runner.close()
