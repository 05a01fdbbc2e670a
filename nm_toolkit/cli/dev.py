"""``nmt dev``: real services for local development (a Kafka broker on 127.0.0.1)."""

from __future__ import annotations

from contextlib import nullcontext

import typer

from nm_toolkit.cli.common import stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit
from nm_toolkit.devtools.kafka import KAFKA_VERSION, KafkaBroker, ensure_kafka_jars

app = typer.Typer(help="Local development services.", no_args_is_help=True)


@app.command()
def kafka(
    port: int = typer.Option(9092, help="port of the PLAINTEXT listener on 127.0.0.1 (0: any free port)"),
    partitions: int = typer.Option(4, help="default partitions of new topics"),
    fetch_only: bool = typer.Option(False, "--fetch-only", help="only download the jars (cached) and exit"),
    as_json: bool = JsonOption,
) -> None:
    """Run a single-node Kafka 4.x broker (KRaft) until Ctrl-C; jars come from Maven Central once."""
    lib = ensure_kafka_jars()
    if fetch_only:
        emit(as_json, {"kafka_version": KAFKA_VERSION, "lib": str(lib)}, "Kafka jars", [{"version": KAFKA_VERSION, "lib": str(lib)}])
        return
    stop = stop_on_signals()
    with console.status("starting Kafka...") if not as_json else nullcontext():
        broker = KafkaBroker(port=port, partitions=partitions).start()
    try:
        info = {"bootstrap_servers": broker.bootstrap_servers, "version": KAFKA_VERSION, "work_dir": str(broker.work_dir)}
        emit(as_json, info, "Kafka broker running (Ctrl-C stops it)", [info])
        if not as_json:
            console.print(f"export NMT_BUS__KIND=kafka NMT_BUS__BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        stop.wait()
    finally:
        broker.stop()
