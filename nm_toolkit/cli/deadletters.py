"""``nmt dead-letters``: what the services could not use, and sending it back once fixed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.common import ConfigOption, shared_bus_settings
from nm_toolkit.cli.output import JsonOption, emit
from nm_toolkit.errors import UserError

if TYPE_CHECKING:
    from nm_toolkit.bus.letters import Letter
    from nm_toolkit.config import Settings

app = typer.Typer(help="Dead letters: read them, and replay them once the cause is fixed.", no_args_is_help=True)

ServiceOption = typer.Option(None, "--service", "-s", help="only this service's dead letters (repeatable)")


def _letters(settings: Settings, services: list[str] | None, wait: float) -> list[Letter]:
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.letters import read_letters

    topics = settings.dead_letter_topics()
    unknown = sorted(set(services or ()) - set(topics))
    if unknown:
        raise UserError(f"no service named {', '.join(unknown)}: choose from {', '.join(topics)}")
    chosen = {name: topic for name, topic in topics.items() if not services or name in services}
    return read_letters(bus_from_settings(settings), chosen, wait)


@app.command("tail")
def tail(
    service: list[str] | None = ServiceOption,
    last: int = typer.Option(20, "--last", "-n", help="how many of the latest dead letters to show"),
    wait: float = typer.Option(3.0, help="seconds without a new letter before showing what arrived"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the latest dead letters of every service (or of --service): where each lies, why it
    was rejected and where it came from. Read with a throw-away group: nobody's offsets move."""
    settings = shared_bus_settings(config, "nmt dead-letters tail")
    letters = _letters(settings, service, wait)[-last:] if last > 0 else []
    summaries = [letter.summary() for letter in letters]
    # people get what they choose a replay by; the value preview and the rest are in --json
    shown = [{key: row[key] for key in ("position", "service", "reason", "origin", "bytes")} for row in summaries]
    emit(as_json, summaries, "dead letters (replay one with `nmt dead-letters replay POSITION`)", rows=shown)


@app.command("replay")
def replay(
    positions: list[str] | None = typer.Argument(None, help="letters to send back, by position (topic/partition/offset, as `tail` shows)"),
    service: list[str] | None = ServiceOption,
    reason: str | None = typer.Option(None, "--reason", help="every letter whose reason contains this text"),
    every: bool = typer.Option(False, "--all", help="every letter of the chosen services"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be sent back, send nothing"),
    wait: float = typer.Option(3.0, help="seconds without a new letter before reading stops"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Send chosen dead letters back to the topic they came from, once their cause is fixed.
    Each letter is replayed at most once, however often this runs (the replay ledger remembers)."""
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.letters import replay as send_back
    from nm_toolkit.bus.letters import replayed_positions

    if not (positions or reason or every):
        raise UserError("say which letters to replay: positions from `nmt dead-letters tail`, --reason TEXT, or --all")
    settings = shared_bus_settings(config, "nmt dead-letters replay")
    letters = _letters(settings, service, wait)
    by_position = {letter.position: letter for letter in letters}
    missing = [p for p in positions or () if p not in by_position]
    if missing:
        raise UserError(f"no dead letter at {', '.join(missing)}: `nmt dead-letters tail` lists them with their positions")
    chosen = [by_position[p] for p in positions or ()]
    chosen += [x for x in letters if (every or (reason and reason in x.reason)) and x.position not in set(positions or ())]
    bus = bus_from_settings(settings)
    ledger = settings.topics.dead_letter_replays
    bus.create_topics([ledger])
    done = replayed_positions(bus, ledger, wait)
    if dry_run:
        rows = [{"position": x.position, "status": "already_replayed" if x.position in done else "would_replay",
                 "to": x.origin_topic, "reason": x.reason} for x in chosen]  # fmt: skip
    else:
        rows = [{"position": o.position, "status": o.status, "to": o.to} for o in send_back(bus, chosen, ledger, done)]
    emit(as_json, rows, "dead letters sent back" if not dry_run else "dead letters that would be sent back (dry run)")
