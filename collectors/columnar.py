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
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, StringConstraints

from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import MAX_ABS_VALUE, MAX_IDENTIFIER_LENGTH, Location, brief, is_identifier

REQUIRED = ("ts", "source", "metric", "value")
_NUMBER_TYPES = frozenset({int, float})  # what orjson makes of JSON numbers; bool is not among them


class _Shared(BaseModel):
    """The fields that apply to every row, validated as the row form validates them."""

    model_config = ConfigDict(extra="forbid")

    unit: Annotated[str, StringConstraints(max_length=32)] = ""
    location: Location | None = None


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


def _as_float(value: Any, strict: bool) -> float:
    """One entry as a float, the way :func:`_numbers` reads a column; NaN (reported) if it is not."""
    if strict and type(value) not in _NUMBER_TYPES:
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _numbers(values: list[Any], name: str, errors: dict[int, str], *, strict: bool) -> np.ndarray:
    """A float array of a column; entries that are not finite numbers are reported in ``errors``.

    ``strict`` takes JSON numbers only, like the row form's values: numpy would happily read
    ``"12.5"`` or ``true`` as numbers, so the types are checked first, in one C-level pass (the
    Python loop runs only for a bad column). Lax, numeric strings count, as pydantic reads the row
    form's epoch ``ts``; the check costs as much as the conversion, so it is spent where it matters.
    """
    array = None
    if not strict or set(map(type, values)) <= _NUMBER_TYPES:
        try:
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 1:
                array = None
        except (TypeError, ValueError, OverflowError):  # a non-number, or an int past the float range
            array = None
    if array is None:
        array = np.fromiter((_as_float(v, strict) for v in values), np.float64, len(values))
    for i in np.flatnonzero(~np.isfinite(array)):
        errors.setdefault(int(i), f"{name}: {brief(values[i])} is not a finite number")
    return array


def _identifiers(values: list[Any], name: str, errors: dict[int, str]) -> None:
    """Report entries that are not non-empty strings of at most 256 characters."""
    try:
        distinct = set(values)
    except TypeError:  # an unhashable entry: check one by one
        distinct = None
    if distinct is not None and all(map(is_identifier, distinct)):
        return
    for i, v in enumerate(values):
        if not is_identifier(v):
            errors.setdefault(
                i, f"{name}: {brief(v)} is not an identifier (1-{MAX_IDENTIFIER_LENGTH} characters, no outer spaces)"
            )


def parse_columns(
    obj: dict[str, Any], bounds: EventTimeBounds, now: datetime | None = None
) -> tuple[ColumnarBatch, dict[int, str]]:
    """Validate a columnar message; return its valid rows and a reason per invalid row index.

    Rows are held to the rules of the row form, vectorised: ``ts`` Unix seconds within ``bounds``,
    ``value`` a JSON number of magnitude at most ``MAX_ABS_VALUE``, names identifiers.
    Raises ValueError when the message as a whole is malformed (missing or ragged columns; a bad
    ``unit`` or ``location`` as a pydantic ValidationError, which is a ValueError).
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
    shared = _Shared.model_validate({k: v for k, v in obj.items() if k != "columns"})

    errors: dict[int, str] = {}
    ts = _numbers(columns["ts"], "ts", errors, strict=False)
    value = _numbers(columns["value"], "value", errors, strict=True)
    _identifiers(columns["source"], "source", errors)
    _identifiers(columns["metric"], "metric", errors)
    for i in np.flatnonzero(np.abs(value) > MAX_ABS_VALUE):
        errors.setdefault(int(i), f"value: {value[i]:g} exceeds the magnitude bound {MAX_ABS_VALUE:g}")
    earliest, latest = bounds.limits(now)
    for i in np.flatnonzero(~((ts >= earliest) & (ts <= latest))):  # NaN rows were reported above
        errors.setdefault(int(i), bounds.outside(float(ts[i])))
    source, metric = columns["source"], columns["metric"]
    if errors:
        keep = np.ones(len(ts), dtype=bool)
        keep[list(errors)] = False
        rows = np.flatnonzero(keep)
        ts, value = ts[rows], value[rows]
        source = [source[i] for i in rows]
        metric = [metric[i] for i in rows]
    return ColumnarBatch(ts, source, metric, value, shared.unit, shared.location), errors
