"""Idle close counts only real idleness: a partition not fetched to its end (a backlog, a rejoin,
records the broker has that no fetch brought yet) or a consumer out of touch with its group keeps
its windows open however long it is silent."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from collectors.service import telemetry_collector
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import Progress, StreamRunner, run_until_idle
from nm_toolkit.config import load_settings


def test_silence_is_idleness_only_while_the_partition_is_fetched_to_its_end_by_a_stable_member(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, collector={"idle_close_seconds": 0.2, "window_seconds": 60})
    bus = EmbeddedBus(default_partitions=1)
    runner = StreamRunner(bus, telemetry_collector(settings, bus))
    producer = bus.producer()
    producer.send(settings.topics.telemetry, orjson.dumps({"ts": 1_704_067_200, "source": "r1", "metric": "rx_bps", "value": 1.0}), b"r1")
    run_until_idle([runner], 0.01)
    collector = runner.service
    (tp,) = collector._partitions
    assert collector.stats()["open_windows"] == 1

    records_wait_in_the_log = Progress(healthy=True, at_log_end=lambda tps: frozenset())  # the last fetch's end is stale
    for silent in (Progress(healthy=True, unfetched=frozenset({tp})), Progress(healthy=False), records_wait_in_the_log):
        for _ in range(3):
            time.sleep(0.25)  # longer than the idle close, in silence
            assert collector.tick(runner.emitter, silent) is False
        assert collector.stats()["open_windows"] == 1, silent

    time.sleep(0.25)  # real idleness: a stable member, the partition fetched to its end
    assert collector.tick(runner.emitter, Progress(healthy=True)) is True
    assert collector.stats()["open_windows"] == 0 and len(bus.messages(settings.topics.series)) == 1
    runner.close()


def test_a_pause_of_the_collector_itself_is_not_idleness(tmp_path: Path) -> None:
    """A collector starved of CPU (or paused) did not watch its partitions meanwhile: the first
    tick after a pause longer than the idle close closes nothing, and idleness then accrues while
    it runs (at most MAX_IDLE_STEP_S a tick)."""
    from collectors.service import MAX_IDLE_STEP_S

    settings = load_settings(state_dir=tmp_path, collector={"idle_close_seconds": 1.5, "window_seconds": 60})
    bus = EmbeddedBus(default_partitions=1)
    runner = StreamRunner(bus, telemetry_collector(settings, bus))
    bus.producer().send(settings.topics.telemetry, orjson.dumps({"ts": 1_704_067_200, "source": "r1", "metric": "rx_bps", "value": 1.0}), b"r1")
    run_until_idle([runner], 0.01)
    collector = runner.service
    collector.tick(runner.emitter, Progress(healthy=False))  # idleness starts from 0 here, however slow the ticks before
    time.sleep(3 * MAX_IDLE_STEP_S)  # the pause: twice the idle close
    assert collector.tick(runner.emitter, Progress(healthy=True)) is False
    closed = False
    for _ in range(40):  # running, the partition fetched to its end: now it is idleness
        time.sleep(0.1)
        closed = closed or collector.tick(runner.emitter, Progress(healthy=True))
    assert closed and collector.stats()["open_windows"] == 0
    runner.close()
