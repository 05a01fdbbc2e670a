"""Columnar telemetry batches: the wire form for high-rate producers.

A row batch costs a Python object per record to validate; a columnar batch is validated and
windowed with numpy, a column at a time, which is what lets one collector keep up with a Kafka
partition. The form is::

    {"columns": {"ts": [epoch seconds...], "source": [...], "metric": [...], "value": [...]},
     "unit": "MB", "location": {"cell": "..."}}

``unit`` and ``location`` are optional and apply to every row. Rows that fail validation are
reported by index, exactly like records of a row batch, and the others are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nm_toolkit.schemas import Location

REQUIRED = ("ts", "source", "metric", "value")
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class ColumnarBatch:
    """The valid rows of a columnar message."""

    ts: np.ndarray
    source: list[str]
    metric: list[str]
    value: np.ndarray
    unit: str = ""
    location: Location | None = None

    def __len__(self) -> int:
        return len(self.ts)


def is_columnar(obj: Any) -> bool:
    return isinstance(obj, dict) and "columns" in obj


def _numbers(values: list[Any], name: str, errors: dict[int, str]) -> np.ndarray:
    """A float array of a column; entries that are not finite numbers are reported in ``errors``."""
    try:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError
    except (TypeError, ValueError):
        array = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            if isinstance(v, int | float) and not isinstance(v, bool):
                array[i] = v
    for i in np.flatnonzero(~np.isfinite(array)):
        errors.setdefault(int(i), f"{name}: {values[i]!r} is not a finite number")
    return array


def _identifiers(values: list[Any], name: str, errors: dict[int, str]) -> None:
    """Report entries that are not non-empty strings of at most 256 characters."""
    try:
        distinct = set(values)
    except TypeError:  # an unhashable entry: check one by one
        distinct = None
    if distinct is not None and all(
        isinstance(v, str) and 0 < len(v.strip()) <= MAX_ID_LENGTH and v == v.strip() for v in distinct
    ):
        return
    for i, v in enumerate(values):
        if not (isinstance(v, str) and 0 < len(v.strip()) <= MAX_ID_LENGTH and v == v.strip()):
            errors.setdefault(i, f"{name}: {v!r} is not an identifier (1-{MAX_ID_LENGTH} characters, no outer spaces)")


def parse_columns(obj: dict[str, Any], earliest: float, latest: float) -> tuple[ColumnarBatch, dict[int, str]]:
    """Validate a columnar message; return its valid rows and a reason per invalid row index.

    Raises ValueError when the message as a whole is malformed (missing or ragged columns).
    """
    extra = set(obj) - {"columns", "unit", "location"}
    if extra:
        raise ValueError(f"columnar batch has unknown fields {sorted(extra)}: allowed are columns, unit, location")
    columns = obj["columns"]
    if not isinstance(columns, dict) or any(not isinstance(columns.get(c), list) for c in REQUIRED):
        raise ValueError(f"'columns' must map each of {', '.join(REQUIRED)} to a list")
    if set(columns) - set(REQUIRED):
        raise ValueError(f"unknown columns {sorted(set(columns) - set(REQUIRED))}: allowed are {', '.join(REQUIRED)}")
    lengths = {c: len(columns[c]) for c in REQUIRED}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns have different lengths {lengths}")
    unit = obj.get("unit", "")
    if not isinstance(unit, str) or len(unit) > 32:
        raise ValueError("'unit' must be a string of at most 32 characters")
    location = Location.model_validate(obj["location"]) if obj.get("location") is not None else None

    errors: dict[int, str] = {}
    ts = _numbers(columns["ts"], "ts", errors)
    value = _numbers(columns["value"], "value", errors)
    _identifiers(columns["source"], "source", errors)
    _identifiers(columns["metric"], "metric", errors)
    for i in np.flatnonzero(np.isfinite(ts) & ((ts < earliest) | (ts > latest))):
        errors.setdefault(int(i), f"ts: {ts[i]} is outside the plausible range [{earliest:.0f}, {latest:.0f}]")
    source, metric = columns["source"], columns["metric"]
    if errors:
        keep = np.ones(len(ts), dtype=bool)
        keep[list(errors)] = False
        rows = np.flatnonzero(keep)
        ts, value = ts[rows], value[rows]
        source = [source[i] for i in rows]
        metric = [metric[i] for i in rows]
    return ColumnarBatch(ts, source, metric, value, unit, location), errors
