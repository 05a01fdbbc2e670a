"""``nmt controller run``: the closed loop driving an SDN controller."""

from __future__ import annotations

from pathlib import Path

import typer

from nm_toolkit.bus import bus_from_settings
from nm_toolkit.cli.common import ConfigOption, require_shared_bus, stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit, print_json
from nm_toolkit.config import load_settings
from nm_toolkit.controller.runner import ControllerRun

app = typer.Typer(help="The SDN controller side of the loop.", no_args_is_help=True)


@app.command("run")
def run(
    interval: float = typer.Option(60.0, help="seconds between decision rounds"),
    rounds: int | None = typer.Option(None, help="stop after this many rounds (default: until Ctrl-C)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="decide and check, but apply nothing"),
    adapter: str | None = typer.Option(None, help="openflow | onos | faucet | kafka (default: controller.adapter)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Collect telemetry, forecast, read intents, run the enabled policies, pass the guardrails
    and apply through the configured adapter (an os-ken OpenFlow 1.3 controller listening on
    controller.listen_host:listen_port by default) and the decisions topic."""
    overrides: dict[str, dict[str, object]] = {}
    if dry_run:
        overrides["policy"] = {"dry_run": True}
    if adapter is not None:
        overrides["controller"] = {"adapter": adapter}
    settings = load_settings(config, **overrides)  # merged over nmt.toml and NMT_* values
    require_shared_bus(settings, "nmt controller run")
    stop = stop_on_signals()
    runner = ControllerRun.start(settings, bus_from_settings(settings))
    if not as_json:
        console.print(f"controller running: adapter={settings.controller.adapter} dry_run={settings.policy.dry_run}")
    try:
        runner.run(stop, interval, rounds, on_round=None if as_json else lambda row: emit(False, [row], "round"))
    finally:
        runner.close()
    if as_json:
        print_json(runner.rounds)
