"""statsmodels state-space forecasters: exponential smoothing (ETS) and seasonal ARIMA.

Both fit one series at a time (seconds per series for SARIMA at hourly data); both fall back to a
non-seasonal model when the history holds fewer than two seasons, and say so in the note.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, Self

import numpy as np
import pandas as pd
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from forecasting.base import Forecaster, PointForecast, future_index
from forecasting.history import clean_history


def _seasonal_fallback(n: int, season_length: int) -> tuple[bool, str]:
    """Whether ``n`` points can carry a seasonal model of ``season_length``, and the note if not."""
    if n >= 2 * season_length + 2:
        return True, ""
    return False, f"history of {n} points is shorter than two seasons: non-seasonal model"


class _StateSpaceForecaster(Forecaster):
    """Shared fit/predict plumbing: clean the history, fit quietly, read intervals off the model."""

    season_length: int

    @abstractmethod
    def _fit_result(self, values: pd.Series, seasonal: bool) -> Any:
        """Fit the statsmodels model (seasonal or not) and return its results object."""

    def fit(self, y: pd.Series) -> Self:
        clean, note = clean_history(y)
        seasonal, fallback = _seasonal_fallback(len(clean), self.season_length)
        series = pd.Series(clean.to_numpy(), index=pd.RangeIndex(len(clean)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.result_ = self._fit_result(series, seasonal)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self.note_ = "; ".join(n for n in (note, fallback, "" if converged else "optimiser did not converge") if n)
        self.y_ = clean
        return self

    @abstractmethod
    def _interval(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, lower and upper bound for the next ``horizon`` steps."""

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        mean, lower, upper = self._interval(horizon, level)
        return PointForecast(future_index(self.y_, horizon), mean, lower, upper, level, self.name, self.note_)


class ETS(_StateSpaceForecaster):
    """Additive-error exponential smoothing with an optional (damped) trend and additive season."""

    name = "ets"

    def __init__(self, season_length: int = 24, trend: str | None = None, damped_trend: bool = False) -> None:
        self.season_length = season_length
        self.trend = trend
        self.damped_trend = damped_trend

    def _fit_result(self, values: pd.Series, seasonal: bool) -> Any:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        model = ETSModel(
            values,
            error="add",
            trend=self.trend,
            damped_trend=self.damped_trend and self.trend is not None,
            seasonal="add" if seasonal else None,
            seasonal_periods=self.season_length if seasonal else None,
        )
        return model.fit(disp=False)

    def _interval(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.result_.nobs
        frame = self.result_.get_prediction(start=n, end=n + horizon - 1).summary_frame(alpha=1 - level)
        return frame["mean"].to_numpy(), frame["pi_lower"].to_numpy(), frame["pi_upper"].to_numpy()


class SARIMA(_StateSpaceForecaster):
    """Seasonal ARIMA via SARIMAX; the default (1,0,1)(1,1,1,24) is the usual cell-traffic reference."""

    name = "sarima"

    def __init__(
        self,
        order: tuple[int, int, int] = (1, 0, 1),
        seasonal_order: tuple[int, int, int] = (1, 1, 1),
        season_length: int = 24,
    ) -> None:
        self.order = order
        self.seasonal_order = seasonal_order
        self.season_length = season_length

    def _fit_result(self, values: pd.Series, seasonal: bool) -> Any:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        seasonal_order = (*self.seasonal_order, self.season_length) if seasonal else (0, 0, 0, 0)
        return SARIMAX(values, order=self.order, seasonal_order=seasonal_order).fit(disp=False)

    def _interval(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prediction = self.result_.get_forecast(horizon)
        bounds = np.asarray(prediction.conf_int(alpha=1 - level))
        return np.asarray(prediction.predicted_mean), bounds[:, 0], bounds[:, 1]
