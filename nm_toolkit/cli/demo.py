"""``nmt demo``: the closed loop end to end on a synthetic (or replayed) network."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from nm_toolkit.cli.common import ConfigOption, settings_from
from nm_toolkit.cli.output import JsonOption, console, emit, print_json, table

# What real producers get wrong; the demo sends these too, to show they are dead-lettered.
MALFORMED_EXAMPLES = [
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": ',
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": "NaN"}',
    b'{"ts": 1700000000, "source": "cell-0000", "value": 1.0}',
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": "lots"}',
    b'{"ts": 12, "source": "cell-0000", "metric": "traffic", "value": 3.0}',
]


def demo(
    input: Path | None = typer.Option(None, "--input", "-i", help="replay this wide/long CSV instead of synthetic data"),
    metric: str = typer.Option("traffic", help="metric name of the replayed values"),
    cells: int = typer.Option(24, help="synthetic cells"),
    days: int = typer.Option(14, help="synthetic days of hourly telemetry"),
    seed: int = typer.Option(7, help="seed of the synthetic network"),
    headroom: float = typer.Option(1.15, help="demo capacity of a cell = this x its busiest observed hour"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Stream telemetry through collectors -> forecasting -> policies and show what was decided."""
    from rich.progress import Progress

    from collectors.publish import replay_frame
    from collectors.synthetic import SyntheticTelemetry
    from collectors.tabular import load_wide_frame
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.pipeline import ClosedLoop, decisions_json

    settings = settings_from(config)
    frame = load_wide_frame(input) if input else SyntheticTelemetry(n_sources=cells, periods=days * 24, seed=seed).frame()
    bus = bus_from_settings(settings)
    bus.create_topics([settings.topics.telemetry])
    producer = bus.producer()
    with Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task("streaming telemetry", total=len(frame))
        replay_frame(producer, settings.topics.telemetry, frame, metric, on_step=lambda i: progress.update(task, completed=i))
    for bad in MALFORMED_EXAMPLES:
        producer.send(settings.topics.telemetry, bad, b"cell-0000")
    producer.flush()
    capacities = (frame.max() * headroom).round(1).to_dict()
    loop = ClosedLoop(bus, settings, capacities=capacities)
    with console.status("collecting, forecasting, deciding...") if not as_json else nullcontext():
        report = loop.run_once(idle_s=0.5, close_windows=True)
    loop.close()
    summary = {
        "telemetry_messages": report.collector["messages"],
        "records_ingested": report.collector["records"],
        "dead_lettered_records": report.collector["dead_letter_records"],
        "late_records": report.collector["late_records"],
        "windows_emitted": report.collector["windows_emitted"],
        "series": report.series,
        "forecasts": len(report.forecasts),
        "decisions_accepted": len(report.decisions),
        "decisions_rejected_by_guardrails": len(report.round.guardrails.rejected),
    }
    if as_json:
        print_json({"summary": summary, "decisions": decisions_json(report.decisions), "skipped_series": report.skipped_series})
        return
    emit(False, summary, "nm-toolkit demo: what the loop did", [{"stage": k, "count": v} for k, v in summary.items()])
    rows = [
        {"kind": d.kind, "target": d.target, "reserve": getattr(d, "bandwidth", None), "capacity": getattr(d, "capacity", None), "reason": d.reason}
        for d in report.decisions
    ]
    if rows:
        console.print(table("decisions", rows))
