"""One way to print results: a rich table for people, JSON for scripts (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = typer.Option(False, "--json", help="print machine-readable JSON instead of a table")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Table:
    """A rich table of ``rows`` (dicts), columns in the given order or the first row's."""
    columns = list(columns or (rows[0].keys() if rows else []))
    out = Table(title=title, header_style="bold")
    for column in columns:
        out.add_column(column, justify="right" if rows and isinstance(rows[0].get(column), int | float) else "left")
    for row in rows:
        out.add_row(*(_fmt(row.get(c)) for c in columns))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def emit(as_json: bool, data: Any, title: str, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Print ``data`` as JSON, or ``rows`` (default: ``data``) as a table titled ``title``."""
    if as_json:
        print_json(data)
    else:
        console.print(table(title, rows if rows is not None else data))
