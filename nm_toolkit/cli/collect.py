"""``nmt collect``: run the telemetry collector and feed telemetry into the bus."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from nm_toolkit.cli.common import (
    ConfigOption,
    MetricsPortOption,
    run_service,
    shared_bus_settings,
    stop_on_signals,
)
from nm_toolkit.cli.output import JsonOption, emit

app = typer.Typer(help="Telemetry collection: the collector service and telemetry producers.", no_args_is_help=True)
InputOption = typer.Option(..., "--input", "-i", help="JSON-lines records, or a wide/long CSV")
OutputOption = typer.Option(..., "--output", "-o", help="CSV file to write (wide: timestamp + one column per source)")


@app.command("run")
def run(
    config: Path | None = ConfigOption,
    idle_exit: float | None = typer.Option(None, help="exit after this many seconds without messages"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Consume the telemetry topic until SIGINT/SIGTERM, windowing records into series."""
    from collectors.service import telemetry_collector
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.runtime import StreamRunner

    settings = shared_bus_settings(config, "nmt collect run")
    stop = stop_on_signals()
    bus = bus_from_settings(settings)
    stats = run_service(StreamRunner(bus, telemetry_collector(settings, bus)), settings, stop, idle_exit_s=idle_exit, metrics_port=metrics_port)
    emit(as_json, stats, "collector", [{"counter": k, "value": v} for k, v in stats.items()])


@app.command("gnmi")
def gnmi(
    config: Path | None = ConfigOption,
    duration: float | None = typer.Option(None, help="stop after this many seconds (default: until SIGINT/SIGTERM)"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Subscribe to the gNMI targets in settings.gnmi.targets and publish their notifications to
    the telemetry topic, reconnecting with back-off, until SIGINT/SIGTERM."""
    from collectors.gnmi_subscribe import GnmiSubscriber, run_subscribers, summary
    from nm_toolkit.bus import DeliveryFailed, bus_from_settings
    from nm_toolkit.cli.output import err_console
    from nm_toolkit.errors import UserError

    settings = shared_bus_settings(config, "nmt collect gnmi")
    if not settings.gnmi.targets:
        raise UserError(
            "no gNMI targets configured: add [[gnmi.targets]] entries (name, address, paths, mode) to nmt.toml, "
            "or set NMT_GNMI__TARGETS to a JSON list"
        )
    for target in settings.gnmi.targets:
        for path in (target.ca_cert, target.client_cert, target.client_key):
            if path is not None and not path.is_file():
                raise UserError(f"gNMI target {target.name}: {path} does not exist: point it at a PEM file")
    stop = stop_on_signals()
    bus = bus_from_settings(settings)
    bus.create_topics([settings.topics.telemetry])
    producer = bus.producer()
    subscribers = [GnmiSubscriber(t, settings.gnmi, producer, settings.topics.telemetry) for t in settings.gnmi.targets]
    port = metrics_port if metrics_port is not None else settings.metrics.port
    if port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        from collectors.gnmi_subscribe import GnmiMetrics

        registry = CollectorRegistry()
        registry.register(GnmiMetrics(subscribers))
        server, _thread = start_http_server(port, addr=settings.metrics.host, registry=registry)
        err_console.print(f"gnmi: metrics on http://{settings.metrics.host}:{server.server_port}/metrics")
    try:
        run_subscribers(subscribers, stop, max_seconds=duration)
    except DeliveryFailed as exc:
        err_console.print(f"[bold red]error:[/] gnmi stopped: {exc} (check the bus, then restart: targets resend their state)")
        raise typer.Exit(1) from exc
    finally:
        producer.close()
    rows = summary(subscribers)
    shown = ("target", "streams", "stream_failures", "published", "connected", "last_error")
    emit(as_json, rows, f"gNMI subscriptions -> {settings.topics.telemetry}", [{k: r[k] for k in shown} for r in rows])


@app.command("publish")
def publish(
    input: Path = InputOption,
    metric: str = typer.Option("traffic", help="metric name for CSV columns"),
    unit: str = typer.Option("", help="unit for CSV values"),
    speedup: float | None = typer.Option(None, help="replay CSV rows at this multiple of real time (default: no waiting)"),
    batch_size: int = typer.Option(500, help="records per message"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Publish a telemetry file to the telemetry topic (JSON lines as-is, CSV replayed in time)."""
    from rich.progress import Progress

    from collectors.publish import replay_frame
    from collectors.tabular import TelemetryFileError, load_wide_frame
    from nm_toolkit.bus import bus_from_settings

    settings = shared_bus_settings(config, "nmt collect publish")
    bus = bus_from_settings(settings)
    bus.create_topics([settings.topics.telemetry])
    producer = bus.producer()
    if input.suffix in {".jsonl", ".ndjson", ".json"}:
        if not input.is_file():
            raise TelemetryFileError(f"{input} does not exist: pass the path of a JSON-lines file")
        with input.open("rb") as fh:
            lines = [line for line in fh if line.strip()]
        for line in lines:
            producer.send(settings.topics.telemetry, line.rstrip(b"\n"), _source_key(line))
        producer.flush()
        counts = {"records": len(lines), "messages": len(lines)}
    else:
        frame = load_wide_frame(input)
        with Progress(transient=True, disable=as_json) as progress:
            task = progress.add_task("replaying", total=len(frame))
            records, messages = replay_frame(
                producer, settings.topics.telemetry, frame, metric, speedup=speedup, unit=unit,
                on_step=lambda i: progress.update(task, completed=i),
            )  # fmt: skip
        counts = {"records": records, "messages": messages}
    producer.close()
    emit(as_json, counts, f"published to {settings.topics.telemetry}", [counts])


def _source_key(line: bytes) -> bytes | None:
    """Key a JSON-lines record by its source so a series stays in one partition."""
    try:
        source = orjson.loads(line).get("source")
    except (orjson.JSONDecodeError, AttributeError):
        return None  # the collector will dead-letter it with the reason
    return str(source).encode() if source is not None else None


@app.command("synth")
def synth(
    output: Path = OutputOption,
    sources: int = typer.Option(20, help="number of cells/links"),
    days: float = typer.Option(14, help="length of the series in days"),
    step: int = typer.Option(3600, help="seconds between samples"),
    seed: int = typer.Option(0),
    as_json: bool = JsonOption,
) -> None:
    """Write a seeded synthetic telemetry table (daily/weekly seasonality, trend, bursts, gaps)."""
    from collectors.synthetic import SyntheticTelemetry

    generator = SyntheticTelemetry(n_sources=sources, periods=int(days * 86400 / step), step_seconds=step, seed=seed)
    frame = generator.frame()
    frame.to_csv(output, index_label="timestamp")
    info = {"output": str(output), "rows": len(frame), "sources": sources, "missing": int(frame.isna().sum().sum())}
    emit(as_json, info, "synthetic telemetry", [info])
