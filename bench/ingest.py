"""Ingest throughput: the Kafka collector vs bare kafka-python consume loops over the same topic.

Usage: python bench/ingest.py [--records 500000] [--batch 500] [--partitions 4] [--step 10] [--window 300]
                              [--repeats 3] [--bootstrap HOST:PORT] [--scale-out | --scale-out-only]

Without --bootstrap it starts its own single-node Kafka 4.x broker on 127.0.0.1. All loops read
the same topic in the same run, so the ratios hold even on a noisy machine:
- bare poll:        KafkaConsumer.poll and count messages (the floor of any consumer)
- bare poll + JSON: the same plus orjson.loads of every message (the least work that sees records)
- collector:        TelemetryCollector: decode, validate, window, publish closed windows, checkpoint
- collector, no I/O: the collector's decode + validate + window on the same bytes held in memory

Each is measured for row batches ({"records": [...]}) and columnar batches ({"columns": {...}}).

--scale-out adds (--scale-out-only runs alone) a scale-out section: 1, 2 and 3 collector member
processes in one consumer group, each a process of its own (as `nmt collect run` would be), in the
same run. For each count a fresh 6-partition topic and group: the members join, and once the group
is settled (every partition owned, no rebalance for 2 s) the same pre-serialised messages are sent
and applied. The rate is the records applied over the time from the first to the last record any
member applied (joining is not ingest; a rebalance during the measurement fails the round). The
CPU count is printed with the table: the members share those cores with the broker and the sender.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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
from collectors.service import PartitionState, cyclic_gc_paused, telemetry_collector
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus import EmbeddedBus
from collectors.windowing import TumblingWindows
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import Settings, load_settings
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


def collector_settings(bootstrap: str, topic: str, group: str, window: int, state_dir: Path) -> Settings:
    return load_settings(
        bus={"kind": "kafka", "bootstrap_servers": bootstrap},
        topics={"telemetry": topic, "series": f"{topic}.series", "dead_letter": f"{topic}.dlq", "late": f"{topic}.late"},
        collector={"group_id": group, "window_seconds": window, "max_poll_records": 2000},
        state_dir=state_dir,
    )


def collector_loop(bootstrap: str, topic: str, records: int, window: int, state_dir: Path) -> float:
    settings = collector_settings(bootstrap, topic, f"collector-{uuid.uuid4().hex[:8]}", window, state_dir)
    bus = KafkaBus(bootstrap)
    runner = StreamRunner(bus, telemetry_collector(settings, bus))
    counters = runner.service.counters  # type: ignore[attr-defined]
    elapsed = 0.0  # time spent in polls that returned messages: joining the group is not ingest
    deadline = time.monotonic() + 30
    while counters.records < records:
        if not runner.joined and time.monotonic() > deadline:
            # kafka-python 3.0.12 now and then loses a member's SyncGroup answer (see GroupDidNotSettle): start over
            runner.close()
            runner = StreamRunner(bus, telemetry_collector(settings, bus))
            counters, deadline = runner.service.counters, time.monotonic() + 30  # type: ignore[attr-defined]
        start = time.perf_counter()
        if runner.step(0.5):
            elapsed += time.perf_counter() - start
    assert counters.dead_letter_records == 0 and counters.late_records == 0
    runner.close()
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


# -- scale-out: 1, 2, 3 member processes in one group ------------------------------------------------
def scale_member(
    index: int, bootstrap: str, topic: str, group: str, window: int, state_dir: str,
    stop: mp.Event, status: mp.Array, results: mp.Queue,
) -> None:  # fmt: skip
    """One collector member (a process of its own) stepping until told to stop. ``status[index]``
    holds (partitions owned, rebalances, records applied, caught up); at the end it reports the
    times of its first and last applied record."""
    settings = collector_settings(bootstrap, topic, group, window, Path(state_dir))
    bus = KafkaBus(bootstrap)
    runner = StreamRunner(bus, telemetry_collector(settings, bus))
    counters = runner.service.counters  # type: ignore[attr-defined]
    first = last = None
    applied = 0
    while not stop.is_set():
        handled = runner.step(0.2)
        if counters.records != applied:
            applied, last = counters.records, time.monotonic()
            first = first or last
        owned = runner.consumer.assignment()
        lags = runner.lag()
        caught_up = not handled and bool(owned) and len(lags) == len(owned) and not any(lags.values())
        status[4 * index : 4 * index + 4] = [len(owned), runner.stats.rebalances, applied, int(caught_up)]
    late, dead = counters.late_records, counters.dead_letter_records
    runner.close()
    results.put((index, first, last, applied, late, dead))


class GroupDidNotSettle(RuntimeError):
    """A member never got partitions: kafka-python 3.0.12 can lose a SyncGroup answer that arrives
    after a short poll gave up waiting, and the member then sits outside the group for good."""


def scale_out_round(bootstrap: str, messages: list[tuple[bytes | None, bytes]], members: int, total: int, window: int, timeout_s: float = 300) -> dict[str, float]:
    """:func:`scale_out_try` until the group settles (at most three tries)."""
    for attempt in range(3):
        try:
            return scale_out_try(bootstrap, messages, members, total, window, timeout_s)
        except GroupDidNotSettle as exc:
            print(f"scale-out, {members} member(s): {exc}; starting the round again ({attempt + 1}/3)")
    raise RuntimeError(f"a group of {members} did not settle in three tries")


def scale_out_try(bootstrap: str, messages: list[tuple[bytes | None, bytes]], members: int, total: int, window: int, timeout_s: float) -> dict[str, float]:
    """``members`` collector processes join a fresh group on a fresh 6-partition topic; once the
    group is settled (every partition owned, no rebalance for 2 s) ``messages`` are sent and the
    members apply them. Return the rate from the first to the last record applied by any member."""
    ctx = mp.get_context("spawn")
    topic = f"bench.scale.{uuid.uuid4().hex[:8]}"
    KafkaBus(bootstrap).create_topics([topic], partitions=6)
    group = f"scale-{members}-{uuid.uuid4().hex[:8]}"
    stop = ctx.Event()
    status = ctx.Array("q", 4 * members)
    results: mp.Queue = ctx.Queue()

    def column(k: int) -> list[int]:
        return list(status[k::4])

    with tempfile.TemporaryDirectory() as state:  # one state_dir for the group, as on one host
        processes = [
            ctx.Process(target=scale_member, args=(i, bootstrap, topic, group, window, state, stop, status, results))
            for i in range(members)
        ]
        for process in processes:
            process.start()
        try:
            deadline = time.monotonic() + 45
            settled_since, last_seen = time.monotonic(), column(1)
            while time.monotonic() < deadline:
                if column(1) != last_seen:
                    settled_since, last_seen = time.monotonic(), column(1)
                owned = column(0)
                if sum(owned) == 6 and all(owned) and time.monotonic() - settled_since >= 2:
                    break
                time.sleep(0.05)
            else:
                raise GroupDidNotSettle(f"the group did not settle in 45 s (partitions owned: {column(0)})")
            producer = KafkaBus(bootstrap).producer()
            for key, value in messages:
                producer.send(topic, value, key)
            producer.flush()
            producer.close()
            deadline = time.monotonic() + timeout_s
            while not (sum(column(2)) >= total and all(column(3))):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{members} members applied {sum(column(2)):,} of {total:,} records in {timeout_s:.0f} s")
                time.sleep(0.05)
            if column(1) != last_seen:
                raise RuntimeError("the group rebalanced while it was measured")
        finally:
            stop.set()
            reports = [results.get(timeout=60) for _ in processes]
            for process in processes:
                process.join(30)
    if any(late or dead for *_, late, dead in reports):
        raise RuntimeError("scale-out members saw late or dead-lettered records")
    first = min(r[1] for r in reports if r[1] is not None)
    last = max(r[2] for r in reports if r[2] is not None)
    applied = sum(r[3] for r in reports)
    return {"rate": applied / (last - first), "applied": applied, "busiest": max(r[3] for r in reports) / applied}


def scale_out(console: Console, records: list[TelemetryRecord], bootstrap: str, args: argparse.Namespace) -> None:
    rows = []
    for form in args.scale_forms.split(","):
        memory = EmbeddedBus(default_partitions=1)
        publish_records(memory.producer(), "payloads", records, batch_size=args.batch, columnar=form == "columnar")
        messages = [(m.key, m.value) for m in memory.messages("payloads")]
        results: dict[int, list[dict[str, float]]] = {n: [] for n in (1, 2, 3)}
        with console.status("measuring scale-out") as status:
            for i in range(args.repeats):  # interleaved, as above
                for members in (1, 2, 3):
                    status.update(f"scale-out, {form} batches: {members} member(s), round {i + 1}/{args.repeats}")
                    results[members].append(scale_out_round(bootstrap, messages, members, len(records), args.window))
        base = statistics.median(r["rate"] for r in results[1])
        for members, runs in results.items():
            rate = statistics.median(r["rate"] for r in runs)
            rows.append((
                f"{form} ({len(messages):,} msgs)", str(members), f"{rate:,.0f}", f"{rate / base:.2f}",
                f"{statistics.median(r['busiest'] for r in runs):.0%}",
                f"{statistics.median(r['applied'] for r in runs) / len(records):.2f}",
            ))  # fmt: skip
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    table = Table(
        title=f"scale-out: {len(records):,} records into 6 partitions, one consumer group, each member a process, "
        f"median of {args.repeats}; CPUs: {usable} usable of {cpus}, shared by the broker, the members and this process"
    )
    for column in ("batches", "members", "records/s", "vs 1 member", "busiest member's share", "applied / records"):
        table.add_column(column, justify="left" if column == "batches" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=500, help="records per Kafka message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--step", type=int, default=10, help="seconds between samples of one series")
    parser.add_argument("--window", type=int, default=300, help="collector window in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop; the median is reported")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--scale-out", action="store_true", help="also measure 1, 2 and 3 collector processes in one group")
    parser.add_argument("--scale-out-only", action="store_true", help="measure only the scale-out section")
    parser.add_argument("--scale-forms", default="rows,columnar", help="batch forms of the scale-out section")
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
        if args.scale_out or args.scale_out_only:
            scale_out(console, records, bootstrap, args)
        if args.scale_out_only:
            return
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
