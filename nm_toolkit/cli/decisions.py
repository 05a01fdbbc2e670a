"""``nmt decisions``: read the decisions topic."""

from __future__ import annotations

import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.common import ConfigOption, shared_bus_settings, stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit, print_json, table

if TYPE_CHECKING:
    from nm_toolkit.schemas import Decision

app = typer.Typer(help="The decisions topic.", no_args_is_help=True)


def _row(decision: Decision) -> dict[str, object]:
    return {
        "created_at": decision.created_at.isoformat(timespec="seconds"), "kind": decision.kind,
        "target": decision.target, "policy": decision.policy, "priority": decision.priority,
        "ttl_s": decision.ttl_seconds, "dry_run": decision.dry_run, "reason": decision.reason,
    }


@app.command("tail")
def tail(
    last: int = typer.Option(20, "--last", "-n", help="how many of the latest decisions to show"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new decisions until Ctrl-C"),
    wait: float = typer.Option(2.0, help="seconds to wait for the topic before showing what arrived"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the latest decisions (read with a throw-away consumer group: nobody's offsets move)."""
    from pydantic import ValidationError

    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.schemas import DecisionAdapter

    settings = shared_bus_settings(config, "nmt decisions tail")
    bus = bus_from_settings(settings)
    bus.create_topics([settings.topics.decisions])  # nothing decided yet is an empty table, not a wait
    consumer = bus.consumer([settings.topics.decisions], f"nmt-decisions-tail-{uuid.uuid4().hex[:8]}")
    latest: deque[Decision] = deque(maxlen=last)
    unreadable = 0
    stop = stop_on_signals()

    def read(timeout_s: float) -> list[Decision]:
        nonlocal unreadable
        out = []
        for message in consumer.poll(1000, timeout_s):
            try:
                out.append(DecisionAdapter.validate_json(message.value))
            except ValidationError:
                unreadable += 1
        return out

    try:
        while batch := read(wait):
            latest.extend(batch)
        decisions = list(latest)
        if as_json:
            print_json([DecisionAdapter.dump_python(d, mode="json") for d in decisions])
        else:
            emit(False, [_row(d) for d in decisions], f"latest decisions on {settings.topics.decisions}")
            if unreadable:
                console.print(f"[yellow]{unreadable} message(s) were not decisions and were skipped[/]")
        while follow and not stop.is_set():
            for decision in read(0.5):
                if as_json:
                    print_json(DecisionAdapter.dump_python(decision, mode="json"))
                else:
                    console.print(table("", [_row(decision)]))
    finally:
        consumer.close()
