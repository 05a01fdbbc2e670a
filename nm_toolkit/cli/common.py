"""Options and helpers shared by command groups."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from nm_toolkit.config import Settings, load_settings
from nm_toolkit.errors import UserError

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file (default: ./nmt.toml if present)")


def settings_from(config: Path | None) -> Settings:
    return load_settings(config)



def require_shared_bus(settings: Settings, command: str) -> None:
    """Commands that talk to other processes need Kafka: the embedded bus lives in one process."""
    if settings.bus.kind != "kafka":
        raise UserError(
            f"{command} needs a shared bus: set NMT_BUS__KIND=kafka and NMT_BUS__BOOTSTRAP_SERVERS "
            "(the embedded bus lives inside one process; try `nmt demo` instead)"
        )


def shared_bus_settings(config: Path | None, command: str) -> Settings:
    settings = load_settings(config)
    require_shared_bus(settings, command)
    return settings


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set, so a service finishes its batch and shuts down cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
