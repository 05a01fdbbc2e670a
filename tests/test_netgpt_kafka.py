"""NetGPT on the real broker: prompts -> edge service -> (answered at the edge | escalated -> cloud
service) -> answers topic, with exactly one answer per request even when the edge and the cloud
are each SIGKILLed and restarted mid-stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from nm_toolkit.bus.kafka import KafkaBus
from tests.kafka_helpers import llm_env

pytestmark = pytest.mark.kafka

REQUESTS = 90


def _answers(bus: KafkaBus, topic: str, group: str, stop: threading.Event, into: list[dict]) -> None:
    consumer = bus.consumer([topic], group)
    try:
        while not stop.is_set():
            into.extend(json.loads(m.value) for m in consumer.poll(500, 0.3))
    finally:
        consumer.close()


def test_every_request_is_answered_exactly_once_through_edge_and_cloud_crashes(
    tiny_llms: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    models = tiny_llms
    tag = uuid.uuid4().hex[:8]
    env = os.environ | llm_env(kafka_bootstrap, tmp_path / "state", models, tag) | {
        "NMT_LLM__MAX_BATCH": "4",
        "NMT_LLM__REQUEST_TIMEOUT_S": "600",
        "NMT_LLM__PROBE_INTERVAL_S": "0.5",
    }
    topics = [env[f"NMT_TOPICS__{name}"] for name in ("PROMPTS", "ANSWERS", "CLOUD_REQUESTS", "CLOUD_STATUS")]
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics(topics, partitions=2)

    def start(command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "nm_toolkit", "llm", command, "--idle-exit", "20", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    cells = [c["cell"] for c in json.loads((models / "context.json").read_text())["cells"]]
    # the edge model here is un-tuned, so it vouches for nothing: a request with no time to spare
    # stays at the edge (the cloud could not answer in time), the others go to the cloud
    prompts = [
        (f"r{i:03d}", {"request_id": f"r{i:03d}", "text": "coffee near me", "location": cells[i % len(cells)],
                       **({"deadline_s": 0.001} if i % 3 == 0 else {})})
        for i in range(REQUESTS)
    ]  # fmt: skip

    answers: list[dict] = []
    stop_reading = threading.Event()
    reader = threading.Thread(target=_answers, args=(bus, topics[1], f"reader-{tag}", stop_reading, answers))
    reader.start()
    edge, cloud = start("serve"), start("cloud")
    processes = [edge, cloud]
    try:
        producer = bus.producer()

        def send(batch: list[tuple[str, dict]]) -> None:
            for rid, body in batch:
                producer.send(topics[0], json.dumps(body).encode(), rid.encode())
                time.sleep(0.02)
            producer.flush()

        def wait_for(count: int, timeout_s: float = 120) -> None:
            deadline = time.monotonic() + timeout_s
            while len({a["request_id"] for a in answers}) < count and time.monotonic() < deadline:
                time.sleep(0.2)

        third = REQUESTS // 3
        send(prompts[:third])
        wait_for(third // 2)
        # a person's question through the running services (the edge is up and serving now)
        asked = subprocess.run(
            [sys.executable, "-m", "nm_toolkit", "llm", "ask", "coffee near me", "--location", cells[0], "--deadline", "0.001", "--json"],
            env=env, capture_output=True, timeout=120,
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr.decode()[-2000:]
        reply = json.loads(asked.stdout)
        assert reply["status"] == "ok" and reply["served_by"] == "edge" and reply["request_id"].startswith("ask-")
        edge.send_signal(signal.SIGKILL)  # mid-stream: some of its answers and cloud requests uncommitted
        edge.wait(10)
        send(prompts[third : 2 * third])
        edge = start("serve")
        processes.append(edge)
        wait_for(third + third // 2)
        cloud.send_signal(signal.SIGKILL)
        cloud.wait(10)
        send(prompts[2 * third :])
        cloud = start("cloud")
        processes.append(cloud)
        wait_for(REQUESTS, timeout_s=180)
        time.sleep(3)  # a duplicate would arrive now
    finally:
        stop_reading.set()
        reader.join(30)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60)[0].decode()[-1500:] for p in processes]
    answers = [a for a in answers if not a["request_id"].startswith("ask-")]
    ids = Counter(a["request_id"] for a in answers)
    assert set(ids) == {rid for rid, _ in prompts}, (sorted(set(rid for rid, _ in prompts) - set(ids)), outputs)
    assert [rid for rid, n in ids.items() if n > 1] == [], outputs
    served = Counter(a["served_by"] for a in answers)
    assert served["edge"] == REQUESTS // 3 and served["cloud"] == REQUESTS - REQUESTS // 3, served
    assert all(a["status"] == "ok" for a in answers)
    cloud_answers = [a for a in answers if a["served_by"] == "cloud"]
    assert all(a["bytes_edge_to_cloud"] > 0 and a["latency_ms"] > 0 for a in cloud_answers)
    assert all(p.returncode in (0, -signal.SIGKILL, -signal.SIGTERM) for p in processes), outputs
