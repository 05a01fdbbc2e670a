"""Forecast accuracy metrics as pure functions of arrays; NaN where a metric is undefined."""

from __future__ import annotations

import numpy as np


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.nanmean(np.abs(np.asarray(actual) - np.asarray(forecast))))


def rmse(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((np.asarray(actual) - np.asarray(forecast)) ** 2)))


def seasonal_scale(history: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast: the yardstick MASE divides by.

    Falls back to the one-step naive when the history is shorter than a season plus one; NaN
    when that is impossible too or the history is constant (no yardstick).
    """
    history = np.asarray(history, dtype=float)
    lag = season if len(history) > season else 1
    if len(history) <= lag:
        return float("nan")
    with np.errstate(all="ignore"):
        scale = np.nanmean(np.abs(history[lag:] - history[:-lag]))
    return float(scale) if np.isfinite(scale) and scale > 0 else float("nan")


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season: int) -> float:
    """Mean absolute scaled error: below 1 beats the in-sample seasonal naive forecast."""
    return mae(actual, forecast) / seasonal_scale(history, season)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200), over the steps where actual and forecast are not both 0."""
    a, f = np.asarray(actual, dtype=float), np.asarray(forecast, dtype=float)
    denominator = np.abs(a) + np.abs(f)
    defined = np.isfinite(a) & np.isfinite(f) & (denominator > 0)
    if not defined.any():
        return float("nan")
    return float(200 * np.mean(np.abs(a - f)[defined] / denominator[defined]))


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actual values inside [lower, upper]; compare with the interval's nominal level."""
    a = np.asarray(actual, dtype=float)
    known = np.isfinite(a)
    if not known.any():
        return float("nan")
    return float(np.mean((a[known] >= np.asarray(lower)[known]) & (a[known] <= np.asarray(upper)[known])))
