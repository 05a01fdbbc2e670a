"""``nmt dev kafka --data-dir``: a broker that keeps its cluster across restarts, in-process or not."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from typer.testing import CliRunner

from nm_toolkit.devtools.kafka import KafkaBroker


def test_dev_kafka_help_lists_data_dir() -> None:
    from nm_toolkit.cli import app

    result = CliRunner().invoke(app, ["dev", "kafka", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "--data-dir" in result.output
    assert "--max-message-bytes" in result.output


def test_dev_kafka_passes_data_dir_to_the_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import nm_toolkit.cli.dev as dev
    from nm_toolkit.cli import app

    made: list[KafkaBroker] = []

    class FakeBroker(KafkaBroker):
        def start(self, timeout_s: float = 60.0) -> KafkaBroker:
            made.append(self)
            self.port = self.port or 1
            return self

        def stop(self, timeout_s: float = 20.0, *, keep_data: bool = False) -> None:
            pass

    stop = threading.Event()
    stop.set()
    monkeypatch.setattr(dev, "KafkaBroker", FakeBroker)
    monkeypatch.setattr(dev, "ensure_kafka_jars", lambda: tmp_path)
    monkeypatch.setattr(dev, "stop_on_signals", lambda: stop)
    args = ["dev", "kafka", "--port", "0", "--data-dir", str(tmp_path / "k"), "--max-message-bytes", "2097152", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [(b.data_dir, b.max_message_bytes) for b in made] == [(tmp_path / "k", 2097152)]
    assert '"persistent": true' in result.output and '"max_message_bytes": 2097152' in result.output


def test_broker_without_data_dir_has_no_cluster_before_start() -> None:
    broker = KafkaBroker(data_dir=None)
    assert broker.cluster_id is None and not broker.formatted and not broker.running
    assert broker.max_message_bytes == 4 * 1024 * 1024


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap])
    try:
        for value in values:
            producer.send(topic, value, partition=0).get(timeout=30)
    finally:
        producer.close()


def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(tp)
    finally:
        consumer.close()


def _read(bootstrap: str, tp: TopicPartition, group: str, expected: int, timeout_s: float = 30.0) -> list[bytes]:
    """What ``group`` reads of ``tp`` from its committed offset on (the earliest if none)."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
    out: list[bytes] = []
    try:
        consumer.assign([tp])
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(1000).values():
                out.extend(r.value for r in records)
    finally:
        consumer.close()
    return out


@pytest.mark.kafka
@pytest.mark.slow
def test_restart_on_the_same_data_dir_keeps_topics_data_and_offsets(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic, group = f"restart-{uuid.uuid4().hex[:8]}", "restart-group"
    tp = TopicPartition(topic, 0)
    broker = KafkaBroker(partitions=1, data_dir=data_dir).start()
    try:
        cluster_id, port = broker.cluster_id, broker.port
        assert cluster_id and (data_dir / "data" / "meta.properties").is_file()
        _produce(broker.bootstrap_servers, topic, [b"first", b"second", b"third"])
        consumer = KafkaConsumer(bootstrap_servers=[broker.bootstrap_servers], group_id=group, enable_auto_commit=False)
        try:
            consumer.assign([tp])
            consumer.commit({tp: OffsetAndMetadata(2, "", -1)})
        finally:
            consumer.close()

        # clean shutdown, then the same object again: same port, cluster, data, committed offset
        broker.stop()
        assert not broker.running and (data_dir / "data" / "meta.properties").is_file()
        broker.start()
        assert (broker.port, broker.cluster_id) == (port, cluster_id)
        assert topic in KafkaAdminClient(bootstrap_servers=[broker.bootstrap_servers]).list_topics()
        assert _committed(broker.bootstrap_servers, group, tp) == 2
        assert _read(broker.bootstrap_servers, tp, "fresh-group", 3) == [b"first", b"second", b"third"]

        # a crash, then a new broker on the same directory (as a second `nmt dev kafka --data-dir`)
        broker.kill()
        assert not broker.running
        broker = KafkaBroker(data_dir=data_dir).start()
        assert (broker.port, broker.cluster_id) == (port, cluster_id)
        assert _committed(broker.bootstrap_servers, group, tp) == 2
        assert _read(broker.bootstrap_servers, tp, group, 1) == [b"third"]
    finally:
        broker.stop()
    assert (data_dir / "data" / "meta.properties").is_file()  # a data dir is never deleted


@pytest.mark.kafka
@pytest.mark.slow
def test_temporary_broker_restarts_in_process_and_is_removed_on_stop() -> None:
    broker = KafkaBroker(partitions=1).start()
    try:
        work_dir, cluster_id = broker.work_dir, broker.cluster_id
        assert work_dir is not None and cluster_id
        _produce(broker.bootstrap_servers, "kept", [b"x"])
        broker.restart()  # clean stop, same directory (kill + start is covered above)
        assert (broker.work_dir, broker.cluster_id) == (work_dir, cluster_id)
        assert _read(broker.bootstrap_servers, TopicPartition("kept", 0), "g", 1) == [b"x"]
    finally:
        broker.stop()
    assert not work_dir.exists()
