"""Backtests: forecast from past origins with only the data before each, score against what came.

A *fixed split* has one origin (train on the first N days, score the next H steps); a *rolling
origin* backtest moves the origin forward every S steps, each time using all data before it.
Every model sees the same origins and the same history, and is timed while it fits and forecasts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting import metrics
from forecasting.base import Forecaster, ManyFitted
from forecasting.short import LastValue

METRICS = ("mae", "rmse", "mase", "smape", "coverage")
BASELINE = "last_value"  # what a short-horizon model must beat: the summary gives every MAE relative to it


def fixed_origin(n_steps: int, train_steps: int, horizon: int) -> list[int]:
    """The single origin of a train/test split; the test window may be cut short by the data's end."""
    if train_steps < 2 or train_steps >= n_steps:
        raise ValueError(f"training on {train_steps} of {n_steps} steps leaves nothing to score: train on fewer")
    return [train_steps]


def rolling_origins(n_steps: int, first: int, horizon: int, step: int) -> list[int]:
    """Origins ``first, first + step, ...`` that each leave a full ``horizon`` to score."""
    if step < 1:
        raise ValueError("the rolling step must be at least 1")
    origins = list(range(first, n_steps - horizon + 1, step))
    if first < 2 or not origins:
        raise ValueError(
            f"no origin after {first} steps leaves {horizon} steps to score in {n_steps}: train on fewer days or shorten the horizon"
        )
    return origins


@dataclass(frozen=True)
class BacktestResult:
    """Per (model, series, origin) scores, and each model's fit + forecast time in seconds."""

    scores: pd.DataFrame
    seconds: dict[str, float]
    n_series: int
    n_origins: int

    def summary(self) -> pd.DataFrame:
        """One row per model: metrics averaged over series and origins, seconds per series-fit, and,
        when the backtest ran the last value, each model's MAE relative to its MAE (after ``mae``)."""
        table = self.scores.groupby("model", sort=False)[list(METRICS)].mean()
        if BASELINE in table.index:
            table.insert(1, f"mae_vs_{BASELINE}", table["mae"] / table.loc[BASELINE, "mae"])
        table["seconds_per_series"] = [self.seconds[m] / (self.n_series * self.n_origins) for m in table.index]
        return table


def score_forecasts(
    actual: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: np.ndarray
) -> dict[str, np.ndarray]:
    """All metrics of many forecasts ((series, steps) arrays) against what happened; ``scale`` is each
    series' MASE yardstick (:func:`~forecasting.metrics.seasonal_scale` of its history)."""
    mae = metrics.mae(actual, mean)
    return {
        "mae": mae,
        "rmse": metrics.rmse(actual, mean),
        "mase": mae / scale,
        "smape": metrics.smape(actual, mean),
        "coverage": metrics.coverage(actual, lower, upper),
    }


def refit_schedule(
    models: Mapping[str, Forecaster], refit_every: int | None, global_refit_every: int | None
) -> dict[str, int | None]:
    """Origins between full refits per model: ``global_refit_every`` for models fitted across all
    series at once (:attr:`~forecasting.base.Forecaster.global_model`, seconds per fit),
    ``refit_every`` for the rest; None refits at every origin."""
    return {name: global_refit_every if model.global_model else refit_every for name, model in models.items()}


def default_refits(origin_step: int, day: int) -> tuple[int, int]:
    """The refit schedule of a rolling backtest with origins ``origin_step`` steps apart: once a day,
    and once a week for global models (models advance by ``update`` in between, as a service's do)."""
    return max(1, day // origin_step), max(1, 7 * day // origin_step)


def with_baseline(models: Mapping[str, Forecaster]) -> dict[str, Forecaster]:
    """``models`` with the last value first (unless already there), so the summary can give every
    MAE relative to it; it costs milliseconds."""
    return dict(models) if BASELINE in models else {BASELINE: LastValue(), **models}


def backtest(
    frame: pd.DataFrame,
    models: Mapping[str, Forecaster],
    origins: Sequence[int],
    horizon: int,
    *,
    season: int,
    level: float = 0.9,
    on_step: Callable[[str, int], None] | None = None,
    refit_every: int | Mapping[str, int | None] | None = None,
    keep_forecasts: bool = False,
) -> BacktestResult:
    """Forecast ``frame`` (wide, regular) from every origin with every model and score it.

    ``season`` is the MASE yardstick's lag in steps (a day, by convention for traffic).
    ``on_step(model, origin)`` is called after each model-origin, for progress bars.
    ``refit_every``: None fits every model afresh at every origin; k fits at the first origin and
    every k-th after it, and in between advances the fitted models with
    :meth:`~forecasting.base.Forecaster.fit_many` / ``update`` by the rows since the last origin
    only (exact for the incremental recursions, a refit for models without one); a mapping gives
    each model its own schedule (a global model costs seconds to refit, a recursion milliseconds),
    models it leaves out refit at every origin.
    ``keep_forecasts`` adds each forecast's mean as a ``forecast`` column of the scores.
    """
    schedule = refit_every if isinstance(refit_every, Mapping) else dict.fromkeys(models, refit_every)
    if any(every is not None and every < 1 for every in schedule.values()):
        raise ValueError("refit_every must be at least 1 (or None: refit at every origin)")
    columns: dict[str, list] = {key: [] for key in ("model", "series", "origin", *METRICS, "note")}
    if keep_forecasts:
        columns["forecast"] = []
    seconds = dict.fromkeys(models, 0.0)
    fitted: dict[str, ManyFitted] = {}
    values = frame.to_numpy(dtype=float)  # scored as arrays: pandas indexing per model and origin cost seconds
    position = {str(c): i for i, c in enumerate(frame.columns)}
    previous = 0
    for k, origin in enumerate(origins):
        history = frame.iloc[:origin]
        actual = values[origin : origin + horizon].T  # (series, steps)
        steps = actual.shape[1]
        scales = metrics.seasonal_scale(values[:origin].T, season)
        for name, model in models.items():
            started = time.perf_counter()
            every = schedule.get(name)
            if every is None:
                forecasts = model.forecast_many(history, steps, level)
            else:
                if k % every == 0 or name not in fitted:
                    fitted[name] = model.fit_many(history, horizon)
                else:
                    fitted[name].update(frame.iloc[previous:origin])
                forecasts = fitted[name].predict_many(steps, level)
            seconds[name] += time.perf_counter() - started
            series = list(forecasts)
            rows = [position[c] for c in series]
            mean = np.array([fc.mean for fc in forecasts.values()])
            scores = score_forecasts(
                actual[rows], mean,
                np.array([fc.lower for fc in forecasts.values()]), np.array([fc.upper for fc in forecasts.values()]),
                scales[rows],
            )  # fmt: skip
            columns["model"] += [name] * len(series)
            columns["series"] += series
            columns["origin"] += [frame.index[origin]] * len(series)
            for metric in METRICS:
                columns[metric] += scores[metric].tolist()
            columns["note"] += [fc.note for fc in forecasts.values()]
            if keep_forecasts:
                columns["forecast"] += list(mean)
            if on_step:
                on_step(name, origin)
        previous = origin
    return BacktestResult(pd.DataFrame(columns), seconds, frame.shape[1], len(origins))
