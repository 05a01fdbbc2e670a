"""The collector against a real Kafka 4.x broker: exact aggregation, crash safety, dead letters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from collectors.service import telemetry_collector
from nm_toolkit.bus.deadletter import ORIGIN, RECORDS, REASON
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner
from tests.kafka_helpers import expected_windows, kafka_settings, read_all, windows_frame

pytestmark = pytest.mark.kafka

WINDOW = 60


def make_records(n_sources: int, per_source: int, seed: int, disorder_s: float = 0.0) -> pd.DataFrame:
    """Records per source at ~6 s spacing, optionally shuffled in time by up to ``disorder_s``."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_sources):
        ts = 1_700_000_000 + np.arange(per_source) * 6.0 + rng.uniform(0, 5, per_source)
        if disorder_s:
            ts = ts + rng.uniform(-disorder_s, 0, per_source)
        frames.append(
            pd.DataFrame(
                {
                    "ts": np.round(ts, 3),
                    "source": f"link-{s:03d}",
                    "metric": rng.choice(["rx_bps", "tx_bps"], per_source),
                    "value": np.round(rng.gamma(2.0, 50.0, per_source), 3),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def batches(records: pd.DataFrame, size: int) -> list[tuple[bytes, bytes]]:
    """(key, value) messages of ``size`` records, keyed by source, in each source's time order."""
    out = []
    for source, group in records.groupby("source", sort=True):
        rows = group.to_dict("records")
        for i in range(0, len(rows), size):
            out.append((str(source).encode(), orjson.dumps({"records": rows[i : i + size]})))
    return out


def assert_exact(got: pd.DataFrame, records: pd.DataFrame) -> None:
    dupes = got[got.duplicated(["source", "metric", "window"], keep=False)]
    # a window emitted twice (after a crash) must be emitted with identical contents
    assert dupes.groupby(["source", "metric", "window"]).nunique().le(1).all().all()
    got = got.drop_duplicates(["source", "metric", "window"]).sort_values(["source", "metric", "window"])
    want = expected_windows(records, WINDOW)
    assert len(got) == len(want)
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    assert np.allclose(got["sum"].to_numpy(), want["sum"].to_numpy())
    assert np.allclose(got["min"].to_numpy(), want["min"].to_numpy())
    assert np.allclose(got["max"].to_numpy(), want["max"].to_numpy())


def run_until(collector: StreamRunner, records: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    stats = collector.service.counters
    while stats.records + stats.late_records < records and time.monotonic() < deadline:
        collector.step(0.2)


def test_fifty_thousand_records_aggregate_exactly(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = kafka_settings(kafka_bootstrap, str(tmp_path), window_seconds=WINDOW, allowed_lateness_seconds=30)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.telemetry], partitions=4)
    # each device sends in sampling order, but its clock jitters by up to 25 s (lateness: 30 s)
    records = make_records(n_sources=50, per_source=1000, seed=1, disorder_s=20)
    assert not records.groupby("source")["ts"].is_monotonic_increasing.all()
    producer = bus.producer()
    for key, value in batches(records, 100):
        producer.send(settings.topics.telemetry, value, key)
    producer.flush()

    collector = StreamRunner(bus, telemetry_collector(settings, bus))
    run_until(collector, len(records))
    assert collector.service.counters.late_records == 0
    assert collector.service.counters.records == 50_000
    assert len(collector.consumer.assignment()) == 4
    collector.service.close_all_windows(collector.emitter)
    collector.close()

    want = expected_windows(records, WINDOW)
    got = windows_frame(read_all(bus, settings.topics.series, len(want)))
    assert_exact(got, records)


def _collector_process(settings_env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nm_toolkit", "collect", "run", "--idle-exit", "12", "--json"],
        env={**os.environ, **settings_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _committed(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        return sum(o.offset for o in admin.list_group_offsets(group).get(group, {}).values())
    except KafkaError:  # the group does not exist yet
        return 0
    finally:
        admin.close()


def test_killed_collector_restarts_without_loss_or_double_counting(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = kafka_settings(kafka_bootstrap, str(tmp_path), window_seconds=WINDOW)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.telemetry], partitions=4)
    records = make_records(n_sources=50, per_source=1000, seed=2)
    messages = batches(records.sort_values(["source", "ts"]), 20)
    # interleave sources so that every partition keeps receiving while the collector runs
    by_source: dict[bytes, list[bytes]] = {}
    for key, value in messages:
        by_source.setdefault(key, []).append(value)
    interleaved = [(k, vs[i]) for i in range(max(map(len, by_source.values()))) for k, vs in by_source.items() if i < len(vs)]

    env = {
        "NMT_BUS__KIND": "kafka",
        "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NMT_STATE_DIR": str(tmp_path / "state"),
        "NMT_COLLECTOR__GROUP_ID": settings.collector.group_id,
        "NMT_COLLECTOR__WINDOW_SECONDS": str(WINDOW),
        "NMT_COLLECTOR__IDLE_CLOSE_SECONDS": "4",
        "NMT_COLLECTOR__CHECKPOINT_INTERVAL_SECONDS": "0.1",
        "NMT_COLLECTOR__MAX_POLL_RECORDS": "10",
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
    }

    def produce() -> None:
        producer = bus.producer()
        for i, (key, value) in enumerate(interleaved):
            producer.send(settings.topics.telemetry, value, key)
            if i % 50 == 49:
                producer.flush()
                time.sleep(0.04)  # about 2,500 messages over ~2-5 s
        producer.flush()

    first = _collector_process(env)
    producer_thread = threading.Thread(target=produce)
    producer_thread.start()
    deadline = time.monotonic() + 60
    while _committed(kafka_bootstrap, settings.collector.group_id) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = _committed(kafka_bootstrap, settings.collector.group_id)
    producer_thread.join(60)
    assert 0 < at_kill < len(interleaved), "the collector must be killed mid-stream"

    second = _collector_process(env)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out.decode()[-2000:]
    stats = orjson.loads(out[out.index(b"{") :])
    assert stats["dead_letter_records"] == 0 and stats["late_records"] == 0

    want = expected_windows(records, WINDOW)
    got = windows_frame(read_all(bus, settings.topics.series, len(want)))
    assert_exact(got, records)


MALFORMED = [
    b"{not json",
    b'{"ts": 1700000000, "source": "link-000", "value": 1.0}',
    b'{"ts": 1700000000, "source": "link-000", "metric": "rx_bps", "value": "fast"}',
    b'{"ts": 1700000000, "source": "link-000", "metric": "rx_bps", "value": "NaN"}',
    b'{"ts": 1700000000, "source": "link-000", "metric": "rx_bps", "value": "Infinity"}',
    b'{"ts": 99, "source": "link-000", "metric": "rx_bps", "value": 1.0}',
    b'{"ts": "3000-01-01T00:00:00Z", "source": "link-000", "metric": "rx_bps", "value": 1.0}',
    b'\xff\xfe\x00garbage',
]


def test_malformed_messages_go_to_the_dead_letter_topic_while_good_records_flow(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = kafka_settings(kafka_bootstrap, str(tmp_path), window_seconds=WINDOW, max_message_bytes=1_000_000)
    bus = KafkaBus(kafka_bootstrap, max_message_bytes=4_000_000)
    bus.create_topics([settings.topics.telemetry], partitions=4)
    records = make_records(n_sources=8, per_source=500, seed=3)
    good = batches(records.sort_values(["source", "ts"]), 50)
    oversized = orjson.dumps({"records": [{"ts": 1_700_000_000, "source": "x", "metric": "m", "value": 1.0}] * 25_000})
    assert 1_000_000 < len(oversized) < 4_000_000
    bad = [*MALFORMED, oversized]
    producer = bus.producer()
    for i, (key, value) in enumerate(good):
        producer.send(settings.topics.telemetry, value, key)
        if i % 10 == 0 and bad:
            producer.send(settings.topics.telemetry, bad.pop(), key)
    for value in bad:
        producer.send(settings.topics.telemetry, value, b"link-000")
    producer.flush()

    collector = StreamRunner(bus, telemetry_collector(settings, bus))
    stats = collector.service.counters
    deadline = time.monotonic() + 60
    while stats.messages < len(good) + len(MALFORMED) + 1 and time.monotonic() < deadline:
        collector.step(0.2)
    collector.service.close_all_windows(collector.emitter)
    collector.close()
    assert stats.records == len(records)
    assert stats.dead_letter_messages == len(MALFORMED) + 1

    dead = read_all(bus, settings.topics.dead_letter, len(MALFORMED) + 1)
    assert sorted(m.value for m in dead) == sorted([*MALFORMED, oversized])
    reasons = {m.value: m.header(REASON).decode() for m in dead}
    assert "invalid JSON" in reasons[b"{not json"]
    assert "exceeds the 1000000-byte limit" in reasons[oversized]
    assert "number" in reasons[MALFORMED[3]] and "plausible range" in reasons[MALFORMED[5]]
    assert all(m.header(ORIGIN).startswith(settings.topics.telemetry.encode()) for m in dead)
    assert all(orjson.loads(m.header(RECORDS)) for m in dead)

    got = windows_frame(read_all(bus, settings.topics.series, len(expected_windows(records, WINDOW))))
    assert_exact(got, records)
