"""Edge compute scaling carried out on the real broker: scale_compute decisions -> the supervisor
starts and stops `nmt llm serve` replicas in the site's consumer group and restarts one that dies."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import Settings, load_settings
from nm_toolkit.llm.supervisor import edge_supervisor, reconcile, replica_launcher
from nm_toolkit.schemas import ScaleCompute
from tests.kafka_helpers import llm_env

# a replica is a new process that imports torch and joins its group: beside `stress --cpu 2` and other
# jobs its start passed 90 s; each wait below ends as soon as its condition holds
UNHURRIED_S = 600.0


def test_reconcile_starts_the_missing_and_stops_the_surplus() -> None:
    assert reconcile([], 2) == ([0, 1], [])
    assert reconcile([0, 1, 2], 1) == ([], [1, 2])
    assert reconcile([1], 2) == ([0], [])
    assert reconcile([0], 0) == ([], [0])


def scale(replicas: int, site: str, **extra: object) -> bytes:
    return ScaleCompute(
        idempotency_key=f"scale-{site}", policy="autoscale", target=site, replicas=replicas, reason="forecast prompt rate",
        created_at=datetime.now(UTC), **extra,
    ).model_dump_json().encode()  # fmt: skip


def members(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        info = admin.describe_groups([group])[group]
        state = info.get("group_state") or info.get("state")
        return len(info.get("members") or ()) if state == "Stable" else -1
    finally:
        admin.close()


def supervisor_settings(
    bootstrap: str, models: Path, state: Path, monkeypatch: pytest.MonkeyPatch, initial_replicas: int
) -> tuple[Settings, dict[str, str]]:
    """Settings on the test broker with topics and groups of this test's own (also the replicas'
    environment, returned), starting ``initial_replicas`` before any decision."""
    tag = uuid.uuid4().hex[:8]
    env = llm_env(bootstrap, state, models, tag) | {"NMT_TOPICS__DECISIONS": f"{tag}.decisions", "NMT_LLM__INITIAL_REPLICAS": str(initial_replicas)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(), env


@pytest.mark.kafka
def test_scale_compute_decisions_start_and_stop_edge_replicas_in_one_group(
    tiny_llms: Path, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, env = supervisor_settings(kafka_bootstrap, tiny_llms, tmp_path / "state", monkeypatch, initial_replicas=1)
    site, group = settings.llm.edge_site, settings.llm.group_id
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.prompts], partitions=4)
    runner = StreamRunner(bus, edge_supervisor(settings, replica_launcher(settings, {**os.environ, **env})))
    service = runner.service
    producer = bus.producer()

    def until(condition: Callable[[], bool], timeout_s: float = UNHURRIED_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            runner.step(timeout_s=0.5)
        return condition()

    try:
        assert until(lambda: service.counters.running_replicas == 1 and members(kafka_bootstrap, group) == 1)
        producer.send(settings.topics.decisions, scale(2, site), b"scale")  # keyed: the decisions topic is compacted
        producer.send(settings.topics.decisions, scale(3, "another-site"), b"scale")
        producer.send(settings.topics.decisions, scale(4, site, dry_run=True), b"scale")
        producer.flush()
        assert until(lambda: service.counters.running_replicas == 2 and members(kafka_bootstrap, group) == 2)
        assert service.counters.decisions_applied == 1
        # a replica that dies is started again
        service._processes[1].send_signal(signal.SIGKILL)
        assert until(lambda: service.counters.restarted == 1 and service.counters.running_replicas == 2)
        producer.send(settings.topics.decisions, scale(1, site), b"scale")
        producer.flush()
        assert until(lambda: service.counters.running_replicas == 1 and members(kafka_bootstrap, group) == 1)
        assert service.counters.stopped == 1
    finally:
        runner.close()
        producer.close()
    assert service.counters.running_replicas == 0


@pytest.mark.kafka
def test_the_cloud_autoscalers_decisions_start_cloud_replicas_in_the_cloud_group(
    tiny_llms: Path, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nmt llm supervise --cloud`: the cloud_autoscale policy's scale_compute (target llm.cloud_site)
    is carried out as `nmt llm cloud` processes in the cloud service's group."""
    settings, env = supervisor_settings(kafka_bootstrap, tiny_llms, tmp_path / "state", monkeypatch, initial_replicas=0)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.cloud_requests], partitions=4)
    runner = StreamRunner(bus, edge_supervisor(settings, replica_launcher(settings, {**os.environ, **env}, cloud=True), cloud=True))
    service = runner.service
    producer = bus.producer()
    try:
        producer.send(settings.topics.decisions, scale(2, settings.llm.cloud_site), b"cloud-scale")
        producer.send(settings.topics.decisions, scale(3, settings.llm.edge_site), b"edge-scale")  # the edge's: not ours
        producer.flush()
        deadline = time.monotonic() + UNHURRIED_S
        while time.monotonic() < deadline and not (service.counters.running_replicas == 2 and members(kafka_bootstrap, settings.llm.cloud_group_id) == 2):
            runner.step(timeout_s=0.5)
        assert service.counters.running_replicas == 2 and members(kafka_bootstrap, settings.llm.cloud_group_id) == 2
        assert service.counters.decisions_applied == 1
    finally:
        runner.close()
        producer.close()
    assert service.counters.running_replicas == 0
