"""One way to print results: a rich table for people, JSON for scripts (``--json``)."""

from __future__ import annotations

import json
import re
from datetime import datetime
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


def table(title: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], columns: Sequence[str] | None = None) -> Table:
    """A rich table of ``rows`` (dicts), columns in the given order or the union of the rows' keys
    (first seen first); one mapping is shown as field/value rows.

    Numbers stay on one line; text wraps, and a word wider than its column (a series id, a model
    such as ``mean(gbm,seasonal_mean,snaive_weekly)``, a path) folds onto the next line instead of
    being cut with an ellipsis, so a table at 80 columns still shows every value in full. Headers
    read with spaces for underscores, and times (UTC) as ``2013-11-22 00:00``."""
    if isinstance(rows, Mapping):
        rows = field_rows(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    out = Table(title=title, header_style="bold")
    for column in columns:
        numeric = bool(rows) and all(_is_number(row.get(column)) for row in rows if row.get(column) is not None)
        numeric = numeric and any(row.get(column) is not None for row in rows)
        # a header wraps between its words (series_id -> "series id"), not inside them
        out.add_column(column.replace("_", " "), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        out.add_row(*(_fmt(row.get(c)) for c in columns))
    return out


def field_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One mapping as ``field``/``value`` rows (lists joined with commas, nested mappings as JSON)."""
    return [{"field": key, "value": _flat(value)} for key, value in data.items()]


def _flat(value: Any) -> Any:
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# An ISO 8601 time as the toolkit writes them (UTC): shown as "2013-11-22 00:00" in tables.
_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(:\d\d(?:\.\d+)?)?(\+00:00|Z)?$")


def _fmt(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str) and (match := _ISO_TIME.match(value)):
        date, minute, seconds, _utc = match.groups()
        return f"{date} {minute}{seconds if seconds and seconds != ':00' else ''}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def emit(as_json: bool, data: Any, title: str, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Print ``data`` as JSON, or ``rows`` (default: ``data``; a mapping is shown field by field) as
    a table titled ``title``."""
    if as_json:
        print_json(data)
        return
    shown = rows if rows is not None else data
    if not shown:
        console.print(f"{title}: none")
    else:
        console.print(table(title, shown))
