"""Options and helpers shared by command groups."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.output import err_console
from nm_toolkit.errors import UserError

# Every command module imports this one: what it needs from the bus and the settings is imported
# inside the helpers, so that building the command tree (each `nmt` start) stays cheap.
if TYPE_CHECKING:
    from nm_toolkit.bus.runtime import StreamRunner
    from nm_toolkit.config import Settings

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file (default: ./nmt.toml if present)")


def settings_from(config: Path | None) -> Settings:
    from nm_toolkit.config import load_settings

    return load_settings(config)



def require_shared_bus(settings: Settings, command: str) -> None:
    """Commands that talk to other processes need Kafka: the embedded bus lives in one process."""
    if settings.bus.kind != "kafka":
        raise UserError(
            f"{command} needs a shared bus: set NMT_BUS__KIND=kafka and NMT_BUS__BOOTSTRAP_SERVERS "
            "(the embedded bus lives inside one process; try `nmt demo` instead)"
        )


def shared_bus_settings(config: Path | None, command: str) -> Settings:
    from nm_toolkit.config import load_settings

    settings = load_settings(config)
    require_shared_bus(settings, command)
    return settings


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set, so a service finishes its batch and shuts down cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


MetricsPortOption = typer.Option(
    None, "--metrics-port", help="serve Prometheus metrics on this port (0: any free port; default: metrics.port)"
)


def run_service(
    runners: StreamRunner | Sequence[StreamRunner],
    settings: Settings,
    stop: threading.Event,
    *,
    idle_exit_s: float | None = None,
    max_messages: int | None = None,
    metrics_port: int | None = None,
) -> dict[str, float]:
    """Run stream services (several run side by side in one process) until stopped; return the
    first one's counters. A fault a service cannot survive (the bus refused a write, the disk is
    full) ends the command with one line and exit code 1; nothing after the last commit is lost,
    so a restart resumes from there."""
    from nm_toolkit.bus.deadletter import one_line
    from nm_toolkit.bus.runtime import FATAL_ERRORS, StreamRunner, run_together

    group = [runners] if isinstance(runners, StreamRunner) else list(runners)
    names = ", ".join(r.service.name for r in group)
    port = metrics_port if metrics_port is not None else settings.metrics.port
    if port is not None:
        from nm_toolkit.bus.metrics import serve_metrics

        bound = serve_metrics(group, port, settings.metrics.host)
        err_console.print(f"{names}: metrics on http://{settings.metrics.host}:{bound}/metrics")
    try:
        run_together(group, stop, idle_exit_s=idle_exit_s, max_messages=max_messages)
    except FATAL_ERRORS as exc:
        err_console.print(
            f"[bold red]error:[/] {names} stopped: {type(exc).__name__}: {one_line(str(exc))} "
            "(nothing after the last commit is lost: fix the cause and restart it)"
        )
        raise typer.Exit(1) from exc
    return group[0].stats_dict()
