"""Models by name, sized to the data's sampling step: what the CLI, bench and service select from."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from forecasting.base import Forecaster, steps_per
from forecasting.combine import Combination
from forecasting.gbm import GlobalGBM
from forecasting.history import DAY, WEEK
from forecasting.naive import SeasonalMean, SeasonalNaive
from forecasting.select import AutoSelect
from forecasting.statistical import ETS, SARIMA
from nm_toolkit.errors import UserError

DEFAULT_MODEL = "ensemble"


def _ensemble(day: int, week: int) -> Forecaster:
    return Combination([GlobalGBM(), SeasonalMean(day, seasons=7)])


def _auto_candidates(day: int, week: int) -> list[Forecaster]:
    return [SeasonalNaive(week), SeasonalMean(day, seasons=7), GlobalGBM(), _ensemble(day, week)]


def _llm(day: int, week: int) -> Forecaster:
    """The edge LLM reads a week and writes a day at a time (on finer data, as many steps as fit its
    context). Imported here, not at the top: torch and transformers add seconds to every start of
    the CLI and the forecast service, which need them only when this model is chosen."""
    from forecasting.llm import LlmForecaster

    return LlmForecaster(context_points=min(week, 168), chunk_points=min(day, 24))


BUILDERS: dict[str, Callable[[int, int], Forecaster]] = {
    "snaive_daily": lambda day, week: SeasonalNaive(day),
    "snaive_weekly": lambda day, week: SeasonalNaive(week),
    "seasonal_mean": lambda day, week: SeasonalMean(day, seasons=7),
    "ets": lambda day, week: ETS(day),
    "sarima": lambda day, week: SARIMA(season_length=day),
    "gbm": lambda day, week: GlobalGBM(),
    "ensemble": _ensemble,
    "llm": _llm,
    "auto": lambda day, week: AutoSelect(_auto_candidates(day, week)),
    # the LLM joins automatic selection as one more candidate: a series gets it only where it wins validation
    "auto_llm": lambda day, week: AutoSelect([*_auto_candidates(day, week), _llm(day, week)]),
}
MODEL_NAMES = tuple(BUILDERS)


class UnknownModelError(UserError):
    """A model name that is not in the registry."""


def make_model(name: str, step: pd.Timedelta) -> Forecaster:
    """The model called ``name`` with its seasons measured in steps of ``step``."""
    if name not in BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}: choose from {', '.join(MODEL_NAMES)}")
    return BUILDERS[name](steps_per(DAY, step), steps_per(WEEK, step))
