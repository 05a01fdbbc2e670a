"""``nmt controller run``: the closed loop driving an SDN controller."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.common import ConfigOption, MetricsPortOption, require_shared_bus, run_service, stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit, print_json

if TYPE_CHECKING:
    from nm_toolkit.controller.service import RoundReport

app = typer.Typer(help="The SDN controller side of the loop.", no_args_is_help=True)


@app.command("run")
def run(
    interval: float | None = typer.Option(None, help="seconds between decision rounds (default: controller.interval_seconds)"),
    rounds: int | None = typer.Option(None, help="stop after this many rounds (default: until Ctrl-C)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="decide and check, but apply nothing"),
    adapter: str | None = typer.Option(None, help="openflow | onos | faucet | kafka (default: controller.adapter)"),
    metrics_port: int | None = MetricsPortOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Read the forecasts and intents topics, run the enabled policies, pass the guardrails and
    apply through the configured adapter (an os-ken OpenFlow 1.3 controller listening on
    controller.listen_host:listen_port by default) and the decisions topic."""
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.runtime import StreamRunner
    from nm_toolkit.config import load_settings
    from nm_toolkit.controller.runner import decision_service

    overrides: dict[str, dict[str, object]] = {}
    if dry_run:
        overrides["policy"] = {"dry_run": True}
    controller: dict[str, object] = {}
    if adapter is not None:
        controller["adapter"] = adapter
    if interval is not None:
        controller["interval_seconds"] = interval
    if controller:
        overrides["controller"] = controller
    settings = load_settings(config, **overrides)  # merged over nmt.toml and NMT_* values
    require_shared_bus(settings, "nmt controller run")
    stop = stop_on_signals()
    rows: list[dict[str, int]] = []

    def on_round(report: RoundReport) -> None:
        rows.append(report.summary())
        if not as_json:
            emit(False, [rows[-1]], "round")
        if rounds is not None and len(rows) >= rounds:
            stop.set()

    service = decision_service(settings)
    service.on_round = on_round
    if not as_json:
        console.print(f"controller running: adapter={settings.controller.adapter} dry_run={settings.policy.dry_run}")
    run_service(StreamRunner(bus_from_settings(settings), service), settings, stop, metrics_port=metrics_port)
    if as_json:
        print_json(rows)
