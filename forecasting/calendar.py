"""Which days are working days: the calendar that day-type models read.

Traffic follows the working week, and a public holiday looks like a Sunday: shops, offices and
schools are shut. A model that knows only the weekday insists on the usual week through a holiday
week (Milan's Christmas week, the test week of its literature protocol). The holidays come from
the ``holidays`` package (python-holidays), by ISO 3166 country code and optional subdivision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

from nm_toolkit.errors import UserError

WORKING_DAY, SATURDAY, DAY_OFF = 0, 1, 2
DAY_TYPE_NAMES = ("working day", "Saturday", "Sunday or holiday")


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


def day_types(days: Sequence[date] | pd.DatetimeIndex, calendar: str | None = None) -> np.ndarray:
    """:data:`WORKING_DAY`, :data:`SATURDAY` or :data:`DAY_OFF` (a Sunday or a public holiday of
    ``calendar``; none when it is None) for each day."""
    index = pd.DatetimeIndex(days)
    weekday = np.asarray(index.day_of_week)
    types = np.where(weekday == 6, DAY_OFF, np.where(weekday == 5, SATURDAY, WORKING_DAY))
    if calendar:
        off = public_holidays(calendar, tuple(sorted(set(index.year))))
        types[np.asarray([d in off for d in index.date], dtype=bool)] = DAY_OFF
    return types
