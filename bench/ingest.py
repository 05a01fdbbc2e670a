"""Ingest throughput: the Kafka collector vs bare kafka-python consume loops over the same topic.

Usage: python bench/ingest.py [--records 500000] [--batch 500] [--partitions 4] [--step 10] [--window 300]
                              [--repeats 3] [--bootstrap HOST:PORT]

Without --bootstrap it starts its own single-node Kafka 4.x broker on 127.0.0.1. All loops read
the same topic in the same run, so the ratios hold even on a noisy machine:
- bare poll:        KafkaConsumer.poll and count messages (the floor of any consumer)
- bare poll + JSON: the same plus orjson.loads of every message (the least work that sees records)
- collector:        TelemetryCollector: decode, validate, window, publish closed windows, checkpoint
- collector, no I/O: the collector's decode + validate + window on the same bytes held in memory

Each is measured for row batches ({"records": [...]}) and columnar batches ({"columns": {...}}).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from collectors.decode import TelemetryDecoder
from collectors.publish import publish_records
from collectors.gnmi import CounterRates
from collectors.service import PartitionState, TelemetryCollector, cyclic_gc_paused
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus import EmbeddedBus
from collectors.windowing import TumblingWindows
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.config import load_settings
from nm_toolkit.devtools.kafka import KafkaBroker
from nm_toolkit.schemas import TelemetryRecord

LOOPS = ("bare poll", "bare poll + JSON", "collector", "collector, no I/O")


def produce(bus: KafkaBus, topic: str, records: list[TelemetryRecord], batch: int, columnar: bool) -> tuple[int, list[bytes]]:
    """Publish ``records`` to ``topic``; return the message count and the payloads themselves."""
    memory = EmbeddedBus(default_partitions=1)
    publish_records(memory.producer(), "payloads", records, batch_size=batch, columnar=columnar)
    payloads = [m.value for m in memory.messages("payloads")]
    producer = bus.producer()
    n_messages = publish_records(producer, topic, records, batch_size=batch, columnar=columnar)[1]
    producer.flush()
    producer.close()
    return n_messages, payloads


def bare_loop(bootstrap: str, topic: str, messages: int, decode: bool) -> float:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        group_id=f"bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    seen = 0
    elapsed = 0.0  # time spent in polls that returned messages, as for the collector
    while seen < messages:
        start = time.perf_counter()
        batches = consumer.poll(timeout_ms=500, max_records=2000)
        for records in batches.values():
            for record in records:
                if decode:
                    orjson.loads(record.value)
                seen += 1
        if batches:
            elapsed += time.perf_counter() - start
    consumer.close(autocommit=False)
    return elapsed


def collector_loop(bootstrap: str, topic: str, records: int, window: int, state_dir: Path) -> float:
    settings = load_settings(
        bus={"kind": "kafka", "bootstrap_servers": bootstrap},
        topics={"telemetry": topic, "series": f"{topic}.series", "dead_letter": f"{topic}.dlq", "late": f"{topic}.late"},
        collector={"group_id": f"collector-{uuid.uuid4().hex[:8]}", "window_seconds": window, "max_poll_records": 2000},
        state_dir=state_dir,
    )
    collector = TelemetryCollector(KafkaBus(bootstrap), settings)
    elapsed = 0.0  # time spent in polls that returned messages: joining the group is not ingest
    while collector.stats.records < records:
        start = time.perf_counter()
        if collector.step(0.5):
            elapsed += time.perf_counter() - start
    assert collector.stats.dead_letter_records == 0 and collector.stats.late_records == 0
    collector.close()
    return elapsed


def in_memory(payloads: list[bytes], window: int) -> float:
    decoder = TelemetryDecoder()
    state = PartitionState(TumblingWindows(window), CounterRates())
    start = time.perf_counter()
    with cyclic_gc_paused():
        for raw in payloads:
            state.ingest(decoder.decode(raw))
        state.windows.close_ready()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=500, help="records per Kafka message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--step", type=int, default=10, help="seconds between samples of one series")
    parser.add_argument("--window", type=int, default=300, help="collector window in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop; the median is reported")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    args = parser.parse_args()
    console = Console()
    sources = 200
    telemetry = SyntheticTelemetry(n_sources=sources, periods=-(-args.records // sources), step_seconds=args.step, missing_probability=0)
    records = list(telemetry.records())[: args.records]
    broker = None if args.bootstrap else KafkaBroker(partitions=args.partitions).start()
    bootstrap = args.bootstrap or broker.bootstrap_servers
    rates: dict[tuple[str, str], float] = {}
    messages: dict[str, int] = {}
    try:
        bus = KafkaBus(bootstrap)
        for form in ("rows", "columnar"):
            topic = f"bench.ingest.{form}.{uuid.uuid4().hex[:6]}"
            bus.create_topics([topic], partitions=args.partitions)
            with console.status(f"producing {len(records):,} records as {form} batches"):
                messages[form], payloads = produce(bus, topic, records, args.batch, form == "columnar")
            timings: dict[str, list[float]] = {name: [] for name in LOOPS}
            with tempfile.TemporaryDirectory() as state, console.status("measuring") as status:
                for i in range(args.repeats):  # interleaved, so drift in machine load hits every loop alike
                    status.update(f"measuring {form} batches, round {i + 1}/{args.repeats}")
                    timings["bare poll"].append(bare_loop(bootstrap, topic, messages[form], decode=False))
                    timings["bare poll + JSON"].append(bare_loop(bootstrap, topic, messages[form], decode=True))
                    timings["collector"].append(collector_loop(bootstrap, topic, len(records), args.window, Path(state) / str(i)))
                    timings["collector, no I/O"].append(in_memory(payloads, args.window))
            for name, values in timings.items():
                rates[(form, name)] = len(records) / statistics.median(values)
    finally:
        if broker:
            broker.stop()

    table = Table(
        title=f"ingest: {len(records):,} records ({sources} series, a sample every {args.step} s, {args.window} s windows) "
        f"in batches of {args.batch}, {args.partitions} partitions, median of {args.repeats}"
    )
    for column in ("batches", "loop", "records/s", "vs bare poll", "vs bare poll + JSON"):
        table.add_column(column, justify="left" if column in ("batches", "loop") else "right")
    for (form, name), value in rates.items():
        table.add_row(
            f"{form} ({messages[form]:,} msgs)", name, f"{value:,.0f}",
            f"{value / rates[(form, 'bare poll')]:.2f}", f"{value / rates[(form, 'bare poll + JSON')]:.2f}",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
