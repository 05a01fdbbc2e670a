"""``nmt dev``: real services for local development (a Kafka broker on 127.0.0.1)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from nm_toolkit.cli.common import stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit
from nm_toolkit.devtools.kafka import DEFAULT_MAX_MESSAGE_BYTES, KAFKA_VERSION, KafkaBroker, ensure_kafka_jars

app = typer.Typer(help="Local development services.", no_args_is_help=True)


@app.command()
def kafka(
    port: int = typer.Option(9092, help="port of the PLAINTEXT listener on 127.0.0.1 (0: any free port)"),
    partitions: int = typer.Option(4, help="default partitions of new topics"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="keep the cluster in this directory: formatted once, reused (topics, data, offsets) by later runs, never deleted"
    ),
    max_message_bytes: int = typer.Option(
        DEFAULT_MAX_MESSAGE_BYTES, min=1024, help="the broker's message.max.bytes: the largest record batch it accepts"
    ),
    fetch_only: bool = typer.Option(False, "--fetch-only", help="only download the jars (cached) and exit"),
    as_json: bool = JsonOption,
) -> None:
    """Run a single-node Kafka 4.x broker (KRaft) until Ctrl-C; jars come from Maven Central once.

    Without --data-dir the cluster lives in a temporary directory removed on exit."""
    lib = ensure_kafka_jars()
    if fetch_only:
        emit(as_json, {"kafka_version": KAFKA_VERSION, "lib": str(lib)}, "Kafka jars", [{"version": KAFKA_VERSION, "lib": str(lib)}])
        return
    stop = stop_on_signals()
    with console.status("starting Kafka...") if not as_json else nullcontext():
        broker = KafkaBroker(port=port, partitions=partitions, max_message_bytes=max_message_bytes, data_dir=data_dir).start()
    try:
        info = {
            "bootstrap_servers": broker.bootstrap_servers, "version": KAFKA_VERSION, "work_dir": str(broker.work_dir),
            "cluster_id": broker.cluster_id, "persistent": data_dir is not None, "max_message_bytes": broker.max_message_bytes,
        }  # fmt: skip
        emit(as_json, info, "Kafka broker running (Ctrl-C stops it)", [info])
        if not as_json:
            console.print(f"export NMT_BUS__KIND=kafka NMT_BUS__BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        stop.wait()
    finally:
        broker.stop()
