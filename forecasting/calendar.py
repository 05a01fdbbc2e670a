"""Which days are working days: the calendar that day-type models read.

Traffic follows the working week, and a public holiday looks like a Sunday: shops, offices and
schools are shut. A model that knows only the weekday insists on the usual week through a holiday
week (Milan's Christmas week, the test week of its literature protocol). The holidays come from
the ``holidays`` package (python-holidays), by ISO 3166 country code and optional subdivision.

Some working days are only half working days: a bridge day between a holiday and the weekend, and
the working days of a declared break (Christmas to Epiphany, when Italy's schools are shut, and
many take the whole fortnight off). On Milan they sit between a working day and a Saturday: the
two working days before Christmas, in the validation week, and all four of the test week.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

from nm_toolkit.errors import UserError

WORKING_DAY, SATURDAY, DAY_OFF, REDUCED = 0, 1, 2, 3
DAY_TYPE_NAMES = ("working day", "Saturday", "Sunday or holiday", "bridge or break day")


def parse_break(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The first and last (month, day) of a yearly break written "MM-DD..MM-DD" ("12-23..01-06"
    runs over the new year)."""
    try:
        first, last = (tuple(int(part) for part in end.split("-")) for end in text.split(".."))
        for month, day in (first, last):
            date(2000, month, day)  # a leap year: 02-29 is a day
    except (ValueError, TypeError) as exc:
        raise UserError(f"break {text!r} is not MM-DD..MM-DD: write e.g. 12-23..01-06 (23 December to 6 January)") from exc
    return first, last  # type: ignore[return-value]


def in_breaks(days: pd.DatetimeIndex, breaks: Sequence[str]) -> np.ndarray:
    """Whether each day falls in one of ``breaks`` ("MM-DD..MM-DD", yearly)."""
    key = np.asarray(days.month * 100 + days.day)
    inside = np.zeros(len(days), dtype=bool)
    for text in breaks:
        (m0, d0), (m1, d1) = parse_break(text)
        first, last = m0 * 100 + d0, m1 * 100 + d1
        inside |= (key >= first) & (key <= last) if first <= last else (key >= first) | (key <= last)
    return inside


@lru_cache(maxsize=32)
def public_holidays(calendar: str, years: tuple[int, ...]) -> frozenset[date]:
    """The public holidays of ``calendar`` ("IT", or "IT-MI" with a subdivision) in ``years``."""
    import holidays

    country, _, subdivision = calendar.partition("-")
    try:
        found = holidays.country_holidays(country.upper(), subdiv=subdivision.upper() or None, years=years)
    except NotImplementedError as exc:
        raise UserError(f"no holiday calendar {calendar!r}: use an ISO 3166 country code, optionally with a subdivision (IT, IT-MI, US-CA)") from exc
    return frozenset(found)


def week_types(days: pd.DatetimeIndex, calendar: str | None) -> np.ndarray:
    """:data:`WORKING_DAY`, :data:`SATURDAY` or :data:`DAY_OFF` (a Sunday or a public holiday of
    ``calendar``; none when it is None) for each day."""
    weekday = np.asarray(days.day_of_week)
    types = np.where(weekday == 6, DAY_OFF, np.where(weekday == 5, SATURDAY, WORKING_DAY))
    if calendar:
        off = public_holidays(calendar, tuple(sorted(set(days.year))))
        types[np.asarray([d in off for d in days.date], dtype=bool)] = DAY_OFF
    return types


def day_types(days: Sequence[date] | pd.DatetimeIndex, calendar: str | None = None, breaks: Sequence[str] = ()) -> np.ndarray:
    """The type of each day: :func:`week_types`, with :data:`REDUCED` for a working day between
    two days off (a bridge: only a holiday beside a weekend makes one) or inside one of ``breaks``."""
    index = pd.DatetimeIndex(days).normalize()
    types = week_types(index, calendar)
    before = week_types(index - pd.Timedelta(days=1), calendar)
    after = week_types(index + pd.Timedelta(days=1), calendar)
    bridge = (before != WORKING_DAY) & (after != WORKING_DAY)
    types[(types == WORKING_DAY) & (bridge | in_breaks(index, breaks))] = REDUCED
    return types
