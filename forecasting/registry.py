"""Models by name, sized to the data's sampling step: what the CLI, bench and service select from.

Each model's module is imported when the model is built, not with the registry: the CLI reads
``MODEL_NAMES`` for its options at every start, which must not cost scipy, scikit-learn and
statsmodels (or torch, for the LLM).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nm_toolkit.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from forecasting.base import Forecaster
    from nm_toolkit.config import ForecastSettings, Settings

DEFAULT_MODEL = "ensemble"


def _seasonal_naive(season: int) -> Forecaster:
    from forecasting.naive import SeasonalNaive

    return SeasonalNaive(season)


def _seasonal_mean(day: int) -> Forecaster:
    from forecasting.naive import SeasonalMean

    return SeasonalMean(day, seasons=7)


def _forecast_settings(settings: Settings | None) -> ForecastSettings:
    """The forecast settings of ``settings`` (default: the settings file and ``NMT_*`` variables)."""
    from nm_toolkit.config import load_settings

    return (settings or load_settings()).forecast


def _day_type(forecast: ForecastSettings) -> Forecaster:
    from forecasting.daytype import DayTypeProfile

    return DayTypeProfile(days=8, calendar=forecast.holidays, breaks=tuple(forecast.breaks))


def _gbm(recent_lags: int = 0) -> Forecaster:
    from forecasting.gbm import GlobalGBM

    return GlobalGBM(recent_lags=recent_lags)


def _ets(day: int) -> Forecaster:
    from forecasting.statistical import ETS

    return ETS(day)


def _sarima(day: int) -> Forecaster:
    from forecasting.statistical import SARIMA

    return SARIMA(season_length=day)


def _short(name: str) -> Forecaster:
    from forecasting import short

    return {"last_value": short.LastValue, "drift": short.Drift, "ses": short.SimpleES, "holt": short.HoltES}[name]()


SHORT_MODELS = ("last_value", "drift", "ses", "holt")


def _ar() -> Forecaster:
    from forecasting.autoreg import DirectAR

    return DirectAR()


def _auto(day: int, week: int, settings: Settings | None, extra: tuple[Forecaster, ...] = ()) -> Forecaster:
    """Per-series selection with the last value as the baseline a candidate must beat on its folds.

    Day-ahead: the seasonal and global models. At horizons of 6 hours or less the short-horizon
    models replace them (the direct autoregression, smoothing, and the seasonal mean, which an
    hourly series 6 hours ahead needs), all incremental, so the selection over three days of hourly
    folds costs a few fits, not one per fold."""
    from forecasting.select import AutoSelect

    short = [*(_short(n) for n in SHORT_MODELS), _ar(), _seasonal_mean(day)]
    return AutoSelect([_short("last_value"), *_auto_candidates(day, week, settings), *extra], short_candidates=[*short, *extra])


def _auto_short() -> Forecaster:
    """Selection among the short-horizon models only, on the last 12 horizons of each series' history,
    fitted once and advanced by update() through the folds: cheap enough to rerun every hour."""
    from forecasting.select import AutoSelect

    return AutoSelect([_short(n) for n in SHORT_MODELS], folds=12, refit_every=12)


def _ensemble(day: int, settings: Settings | None) -> Forecaster:
    """The GBM with a profile. Where a holiday calendar is set, the day-type profile, weighted 4 to
    the GBM's 1: on Milan's validation week that scored 0.797 MASE, against 0.808 for equal weights
    and 0.802 for the profile alone (bench/RESULTS.md). Else the seasonal mean, equally: without
    holidays a weekday profile insists on the usual week through a holiday week (it won Milan's
    validation week and lost the Christmas test week)."""
    from forecasting.combine import Combination

    forecast = _forecast_settings(settings)
    if forecast.holidays:
        return Combination([_gbm(), _day_type(forecast)], weights=(1, 4))
    return Combination([_gbm(), _seasonal_mean(day)])


def _auto_candidates(day: int, week: int, settings: Settings | None) -> list[Forecaster]:
    return [_seasonal_naive(week), _seasonal_mean(day), _gbm(), _ensemble(day, settings)]


def _llm(settings: Settings | None) -> Forecaster:
    """The serving edge model (``llm.edge_model`` of ``settings``, default: the settings file and
    ``NMT_*`` variables) with its trend adapter from ``llm.adapters_dir``, trained once by
    ``nmt forecast train-trend``: fitting loads it, never tunes it. Its context and chunk are the
    ones it was trained with. Imported here, not at the top: torch and transformers add seconds to
    every start of the CLI and the forecast service, which need them only when this model is chosen."""
    from forecasting.llm import LlmForecaster
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.deployment import LlmPaths

    paths = LlmPaths.from_settings(settings or load_settings())
    return LlmForecaster.from_adapter(paths.adapters_dir, paths.edge_model)


# (steps per day, steps per week, the settings an LLM model's paths come from) -> model
BUILDERS: dict[str, Callable[[int, int, Settings | None], Forecaster]] = {
    "snaive_daily": lambda day, week, settings: _seasonal_naive(day),
    "snaive_weekly": lambda day, week, settings: _seasonal_naive(week),
    "seasonal_mean": lambda day, week, settings: _seasonal_mean(day),
    "ets": lambda day, week, settings: _ets(day),
    "sarima": lambda day, week, settings: _sarima(day),
    "gbm": lambda day, week, settings: _gbm(),
    # the last hour's values as features (12 at 5 minutes, at least the last 3): for horizons of minutes to an hour
    "gbm_short": lambda day, week, settings: _gbm(recent_lags=max(3, day // 24)),
    "ensemble": lambda day, week, settings: _ensemble(day, settings),
    # the mean day of the last 8 of its kind: working day, Saturday, Sunday or holiday (forecast.holidays and .breaks)
    "day_type": lambda day, week, settings: _day_type(_forecast_settings(settings)),
    "llm": lambda day, week, settings: _llm(settings),
    "last_value": lambda day, week, settings: _short("last_value"),
    "drift": lambda day, week, settings: _short("drift"),
    "ses": lambda day, week, settings: _short("ses"),
    "holt": lambda day, week, settings: _short("holt"),
    # a robust linear model of the next hour on the last two hours of the same series (5-minute flows)
    "ar": lambda day, week, settings: _ar(),
    "auto_short": lambda day, week, settings: _auto_short(),
    "auto": lambda day, week, settings: _auto(day, week, settings),
    # the edge LLM's trend adapter joins automatic selection as one more candidate: a series gets it only
    # where it has the lowest validation MASE (the adapter is loaded for each fold, not tuned)
    "auto_llm": lambda day, week, settings: _auto(day, week, settings, (_llm(settings),)),
}
MODEL_NAMES = tuple(BUILDERS)


class UnknownModelError(UserError):
    """A model name that is not in the registry."""


def make_model(name: str, step: pd.Timedelta, settings: Settings | None = None) -> Forecaster:
    """The model called ``name`` with its seasons measured in steps of ``step``; ``settings`` say
    where the LLM models find the edge model and its adapters (default: :func:`load_settings`)."""
    from forecasting.base import steps_per
    from forecasting.history import DAY, WEEK

    if name not in BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}: choose from {', '.join(MODEL_NAMES)}")
    return BUILDERS[name](steps_per(DAY, step), steps_per(WEEK, step), settings)
