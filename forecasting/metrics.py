"""Forecast accuracy metrics as pure functions of arrays; NaN where a metric is undefined.

Each metric reduces the last axis: one forecast (1-D arrays) gives a float, many series at once
((series, steps) arrays) give one value per series, so a backtest scores every series of an origin
in one call instead of one Python call per series.
"""

from __future__ import annotations

import numpy as np


def _result(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


def _mean_where(values: np.ndarray, where: np.ndarray) -> float | np.ndarray:
    """Mean over the last axis of the entries where ``where`` holds; NaN where none does."""
    count = where.sum(axis=-1)
    total = np.where(where, values, 0.0).sum(axis=-1)
    with np.errstate(all="ignore"):
        return _result(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def mae(actual: np.ndarray, forecast: np.ndarray) -> float | np.ndarray:
    error = np.abs(np.asarray(actual, dtype=float) - np.asarray(forecast, dtype=float))
    return _mean_where(error, np.isfinite(error))


def rmse(actual: np.ndarray, forecast: np.ndarray) -> float | np.ndarray:
    error = np.asarray(actual, dtype=float) - np.asarray(forecast, dtype=float)
    return _result(np.sqrt(_mean_where(error * error, np.isfinite(error))))


def seasonal_scale(history: np.ndarray, season: int) -> float | np.ndarray:
    """In-sample MAE of the seasonal naive forecast: the yardstick MASE divides by.

    Falls back to the one-step naive when the history is shorter than a season plus one; NaN
    when that is impossible too or the history is constant (no yardstick).
    """
    history = np.asarray(history, dtype=float)
    length = history.shape[-1]
    lag = season if length > season else 1
    if length <= lag:
        return _result(np.full(history.shape[:-1], np.nan))
    scale = np.asarray(mae(history[..., lag:], history[..., :-lag]))
    return _result(np.where(np.isfinite(scale) & (scale > 0), scale, np.nan))


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season: int) -> float | np.ndarray:
    """Mean absolute scaled error: below 1 beats the in-sample seasonal naive forecast."""
    return _result(np.asarray(mae(actual, forecast)) / seasonal_scale(history, season))


def smape(actual: np.ndarray, forecast: np.ndarray) -> float | np.ndarray:
    """Symmetric MAPE in percent (0..200), over the steps where actual and forecast are not both 0."""
    a, f = np.asarray(actual, dtype=float), np.asarray(forecast, dtype=float)
    denominator = np.abs(a) + np.abs(f)
    defined = np.isfinite(a) & np.isfinite(f) & (denominator > 0)
    with np.errstate(all="ignore"):
        return _result(200 * np.asarray(_mean_where(np.abs(a - f) / denominator, defined)))


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float | np.ndarray:
    """Share of actual values inside [lower, upper]; compare with the interval's nominal level."""
    a = np.asarray(actual, dtype=float)
    return _mean_where((a >= np.asarray(lower)) & (a <= np.asarray(upper)), np.isfinite(a))
