"""``nmt demo``: the whole system once, end to end, on the embedded bus (see :mod:`nm_toolkit.demo`)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from nm_toolkit.cli.common import ConfigOption, settings_from
from nm_toolkit.cli.output import JsonOption, console, emit, print_json, table


def demo(
    input: Path | None = typer.Option(None, "--input", "-i", help="replay this wide/long CSV as the network telemetry instead of synthetic cells"),
    metric: str = typer.Option("traffic", help="metric name of the replayed values"),
    cells: int = typer.Option(24, help="synthetic cells"),
    days: int = typer.Option(14, help="synthetic days of hourly telemetry"),
    prompts: int = typer.Option(96, help="live user prompts about the city"),
    seed: int = typer.Option(7, help="seed of the synthetic network"),
    headroom: float = typer.Option(1.15, help="demo capacity of a cell or link = this x its busiest observed hour"),
    plot: Path | None = typer.Option(None, help="PNG of the day (default: state_dir/demo/city_day.png)"),
    models: Path | None = typer.Option(None, help="NetGPT models from `nmt llm build -o DIR` (default: those of --size, built on first use)"),
    size: str = typer.Option("default", help="default (SmolLM2-135M at the edge and in the cloud, fetched on first use) or tiny (seconds-trained models, noise answers)"),
    ovs: bool = typer.Option(False, "--ovs", help="also carry the decisions out as queues, meters and flows on a private Open vSwitch (needs openvswitch-switch)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """A synthetic city's telemetry and user prompts through the edge and cloud LLM services,
    intents, forecasting, policies and guardrails to decisions that are carried out."""
    from collectors.tabular import load_wide_frame
    from nm_toolkit.demo import CityDayConfig, run_city_day
    from nm_toolkit.pipeline import decisions_json

    settings = settings_from(config)
    network = load_wide_frame(input) if input else None
    figure = plot or settings.state_dir / "demo" / "city_day.png"
    city = CityDayConfig(cells=cells, days=days, prompts=prompts, seed=seed, headroom=headroom, network=network, metric=metric, models=models, size=size, ovs=ovs)
    with console.status("starting") if not as_json else nullcontext() as status:
        report = run_city_day(settings, city, on_stage=lambda stage: status.update(stage) if status else None, figure=figure)
    loop = report.loop
    telemetry = {
        "telemetry_messages": loop.collector["messages"],
        "records_ingested": loop.collector["records"],
        "dead_lettered_records": loop.collector["dead_letter_records"],
        "windows_emitted": loop.collector["windows_emitted"],
        "series": loop.series,
        "forecasts": len(loop.forecasts),
        "decisions_accepted": len(loop.decisions),
        "decisions_rejected_by_guardrails": len(loop.round.guardrails.rejected),
    }
    if as_json:
        print_json({
            "telemetry": telemetry, "prompts": report.prompts, "decisions_by_kind": report.decisions,
            "decisions": decisions_json(loop.decisions), "skipped_series": loop.skipped_series,
            "policy_runs": [{"policy": r.policy, "status": r.status, "decisions": len(r.decisions)} for r in loop.round.runs],
            "edge_service": report.edge, "supervisor": report.supervisor, "switch": report.switch,
            "figure": str(report.figure) if report.figure else None,
        })  # fmt: skip
        return
    emit(False, report.prompts, "prompts: edge and cloud", [{"what": k.replace("_", " "), "value": v} for k, v in report.prompts.items()])
    console.print(table("telemetry -> forecasts -> decisions", [{"stage": k.replace("_", " "), "count": v} for k, v in telemetry.items()]))
    console.print(table("decisions by kind", report.decisions))
    if report.switch is not None:
        console.print(f"on the Open vSwitch bridge: {report.switch['flows']} flows, {report.switch['meters']} meters, {report.switch['queues']} queues")
    if report.figure:
        console.print(f"the day, as a picture: {report.figure}")
