"""Short-horizon forecasters for telemetry at the resolution it arrives: minutes to an hour ahead.

Last value, drift, simple and Holt (linear trend) exponential smoothing. Each works on many series
at once (the maths below are pure functions of (time, series) arrays, vectorised across series and
across the smoothing-parameter grid), carries prediction intervals, and has an exact
:meth:`~forecasting.base.VectorForecaster.update`: new points advance the state (level, trend,
error sums) by the same recursion the fit ran, so ``fit(y[:n]).update(y[n:])`` gives the forecast
``fit(y)`` gives for the same parameters, at the cost of the new points only. A refit re-estimates
the parameters; run it on a schedule, not at every new point.

Missing points (NaN) are skipped by the recursions: the state moves on as forecast (no
correction), as a Kalman filter does with a missing observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasting.base import VectorForecaster

ALPHA_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
HOLT_ALPHA_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)
HOLT_BETA_SHARE_GRID = (0.0, 0.01, 0.03, 0.1, 0.3)  # beta = alpha * share (the trend's smoothing)


# -- pure functions: the recursions ----------------------------------------------------------------
@dataclass
class SmoothingState:
    """Per-series state of an error-correction exponential smoothing recursion (arrays of shape (n,))."""

    level: np.ndarray
    trend: np.ndarray
    sse: np.ndarray  # sum of squared one-step errors over observed points
    count: np.ndarray  # how many one-step errors are in ``sse``


def first_finite(values: np.ndarray) -> np.ndarray:
    """The first finite value of each column of ``values`` (time, series); NaN for all-missing columns."""
    finite = np.isfinite(values)
    rows = finite.argmax(axis=0)
    out = values[rows, np.arange(values.shape[1])]
    return np.where(finite.any(axis=0), out, np.nan)


def smoothing_filter(
    values: np.ndarray, alpha: np.ndarray, beta: np.ndarray, state: SmoothingState
) -> SmoothingState:
    """Run Holt's recursion (``beta`` = 0 and a zero trend: simple smoothing) over ``values`` (time, n).

    ``alpha``, ``beta`` and the state's arrays broadcast together (series, or series x grid).
    Forecast f = level + trend; error e = y - f; level = f + alpha e; trend += beta e.
    """
    level, trend = state.level.copy(), state.trend.copy()
    sse, count = state.sse.copy(), state.count.copy()
    for row in values:
        forecast = level + trend
        observed = np.isfinite(row)
        error = row - forecast if observed.all() else np.where(observed, row - forecast, 0.0)
        sse = sse + error * error
        count = count + observed
        level = forecast + alpha * error
        trend = trend + beta * error
    return SmoothingState(level, trend, sse, count)


def smoothing_variance_factor(horizon: int, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """h-step forecast variance over one-step variance for ETS(A,A,N) / ETS(A,N,N) (beta = 0), shape (n, h)."""
    h = np.arange(1, horizon + 1)[None, :]
    a, b = np.asarray(alpha)[:, None], np.asarray(beta)[:, None]
    return 1 + (h - 1) * (a * a + a * b * h + b * b * h * (2 * h - 1) / 6)


def fit_smoothing(
    values: np.ndarray, alphas: np.ndarray, betas: np.ndarray, trend: bool
) -> tuple[np.ndarray, np.ndarray, SmoothingState]:
    """Choose (alpha, beta) per series from the candidate pairs by in-sample one-step SSE; return the state.

    ``values`` is (time, n); ``alphas`` and ``betas`` are (k,) candidate pairs. The level starts at
    each series' first finite value, the trend at 0.
    """
    n, k = values.shape[1], len(alphas)
    start = np.nan_to_num(first_finite(values))
    lead = np.isfinite(values).argmax(axis=0)  # steps before the first observation are skipped by the filter
    values = values.copy()
    values[lead, np.arange(n)] = np.nan  # the first observation initialised the level: no error for it
    zeros = np.zeros((n, k))
    grid = SmoothingState(np.repeat(start[:, None], k, axis=1), zeros, zeros, zeros)
    a, b = np.asarray(alphas)[None, :], np.asarray(betas)[None, :]
    run = smoothing_filter(values[:, :, None], a, b, grid)
    mse = np.where(run.count > 0, run.sse / np.maximum(run.count, 1), np.inf)
    best = mse.argmin(axis=1)
    pick = np.arange(n), best
    state = SmoothingState(run.level[pick], run.trend[pick], run.sse[pick], run.count[pick])
    if not trend:
        state.trend = np.zeros(n)
    return np.asarray(alphas)[best], np.asarray(betas)[best], state


# -- estimators --------------------------------------------------------------------------------
class LastValue(VectorForecaster):
    """Repeat the last observed value (the naive / random-walk forecast).

    Intervals: a random walk's, sigma * sqrt(h), with sigma the root mean square of the observed
    one-step changes; steps since the last observation (a missing tail) count as steps ahead.
    """

    name = "last_value"

    def __init__(self) -> None:
        pass

    def _fit_values(self, values: np.ndarray) -> None:
        n = values.shape[1]
        self.last_ = np.full(n, np.nan)
        self.gap_ = np.zeros(n)  # steps since the last observation
        self.diff_sum_ = np.zeros(n)
        self.diff_sq_ = np.zeros(n)
        self.diff_count_ = np.zeros(n)
        self.first_ = first_finite(values)
        self.first_at_ = np.isfinite(values).argmax(axis=0).astype(float)  # steps from the end of the data seen
        self._update_values(values)

    def _update_values(self, values: np.ndarray) -> None:
        previous_ok = np.isfinite(self.last_) & (self.gap_ == 0)
        if len(values):
            finite = np.isfinite(values)
            # one-step differences between consecutive observed points, including the old last one
            stacked = np.vstack([np.where(previous_ok, self.last_, np.nan)[None, :], values])
            d = stacked[1:] - stacked[:-1]
            ok = np.isfinite(d)
            self.diff_sum_ += np.where(ok, d, 0).sum(axis=0)
            self.diff_sq_ += np.where(ok, d * d, 0).sum(axis=0)
            self.diff_count_ += ok.sum(axis=0)
            last_row = len(values) - 1 - finite[::-1].argmax(axis=0)
            seen = finite.any(axis=0)
            self.last_ = np.where(seen, values[last_row, np.arange(values.shape[1])], self.last_)
            self.gap_ = np.where(seen, len(values) - 1 - last_row, self.gap_ + len(values))
            self.first_at_ = self.first_at_ - len(values)

    def _sigma(self) -> np.ndarray:
        return np.sqrt(self.diff_sq_ / np.maximum(self.diff_count_, 1))

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        h = self.gap_[:, None] + np.arange(1, horizon + 1)[None, :]
        return np.repeat(self.last_[:, None], horizon, axis=1), self._sigma()[:, None] * np.sqrt(h)


class Drift(LastValue):
    """The last value plus the average change per step over the whole history (the drift method).

    Intervals: sigma * sqrt(h (1 + h / T)), sigma the standard deviation of the one-step changes
    around the drift, T the number of changes (Hyndman & Athanasopoulos, FPP 5.5).
    """

    name = "drift"

    def _slope(self) -> np.ndarray:
        span = -1 - self.gap_ - self.first_at_  # steps between the first and the last observation
        return np.where(span > 0, (self.last_ - self.first_) / np.maximum(span, 1), 0.0)

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        h = self.gap_[:, None] + np.arange(1, horizon + 1)[None, :]
        slope = self._slope()[:, None]
        m = self.diff_count_[:, None]
        mean_d = self.diff_sum_[:, None] / np.maximum(m, 1)
        var = (self.diff_sq_[:, None] - m * mean_d**2) / np.maximum(m - 1, 1)
        return self.last_[:, None] + slope * h, np.sqrt(np.maximum(var, 0) * h * (1 + h / np.maximum(m, 1)))


class SimpleES(VectorForecaster):
    """Simple exponential smoothing, ETS(A,N,N): a level that moves ``alpha`` of the way to each new point.

    ``alpha`` None: chosen per series from a grid by in-sample one-step squared error over the last
    ``fit_window`` points (None: all), so a refit costs the same however long the history is.
    Intervals: sigma * sqrt(1 + (h - 1) alpha^2), sigma the RMS one-step error (kept up to date by
    :meth:`update`).
    """

    name = "ses"
    _trend = False

    def __init__(self, alpha: float | None = None, fit_window: int | None = 2016) -> None:
        self.alpha = alpha
        self.fit_window = fit_window

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.array(ALPHA_GRID if self.alpha is None else (self.alpha,), dtype=float)
        return alphas, np.zeros_like(alphas)

    def _fit_values(self, values: np.ndarray) -> None:
        window = values[-self.fit_window :] if self.fit_window else values
        if not np.isfinite(window).any(axis=0).all():
            window = values  # a column with nothing recent: fall back to the whole history
        alphas, betas = self._grid()
        self.alpha_, self.beta_, self.state_ = fit_smoothing(window, alphas, betas, self._trend)

    def _update_values(self, values: np.ndarray) -> None:
        self.state_ = smoothing_filter(values, self.alpha_, self.beta_, self.state_)

    def _mean_sd(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.state_
        h = np.arange(1, horizon + 1)[None, :]
        mean = s.level[:, None] + s.trend[:, None] * h
        sigma = np.sqrt(s.sse / np.maximum(s.count, 1))[:, None]
        return mean, sigma * np.sqrt(smoothing_variance_factor(horizon, self.alpha_, self.beta_))


class HoltES(SimpleES):
    """Holt's linear-trend exponential smoothing, ETS(A,A,N); ``beta`` is the trend's error-correction
    weight (None: chosen with alpha from a grid, as a share of alpha). Intervals as ETS(A,A,N)'s."""

    name = "holt"
    _trend = True

    def __init__(self, alpha: float | None = None, beta: float | None = None, fit_window: int | None = 2016) -> None:
        self.alpha = alpha
        self.beta = beta
        self.fit_window = fit_window

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        alphas = HOLT_ALPHA_GRID if self.alpha is None else (self.alpha,)
        pairs = [
            (a, b)
            for a in alphas
            for b in ([a * s for s in HOLT_BETA_SHARE_GRID] if self.beta is None else [self.beta])
        ]
        return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)
