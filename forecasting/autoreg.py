"""Direct robust autoregression on the last hours, with intervals from the series' own recent errors.

Real 5-minute backbone flows are not smooth: scheduled transfers repeat every hour or every
three quarters of an hour, and bursts come and go within minutes, so the last value and
exponential smoothing (which only average the past) barely beat a random walk. A linear model of
the next hour on the last two hours of the same series learns those repeats and how far a burst
decays, per series, in milliseconds.

One model per series and steps ahead ``h`` (direct: no forecast is fed back as an input), all
sharing one design: the target is ``y[t+h] - y[t]`` and the inputs are ``y[t-j] - y[t]`` for the
other lags plus an intercept, so the ridge penalty shrinks towards the last value (the baseline
to beat), never towards the mean. The loss is absolute error (iteratively reweighted least
squares), so a burst in the training window does not drag every coefficient; the reweighting is
shared by the ``h`` of a series, which keeps every fit to one small Gram matrix per series and
iteration, batched across series.

Intervals are empirical quantiles of the errors each series' model made at each ``h``: in-sample
at a fit, and replaced by out-of-sample errors as :meth:`DirectAR.update` brings the actual values
of forecasts it could have issued (split-conformal in spirit, on a rolling window), so they widen
in a bursty week and narrow in a calm one without a refit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from forecasting.base import VectorForecaster, steps_per

HOUR = pd.Timedelta(hours=1)
MIN_ROWS_PER_INPUT = 4  # fewer complete training rows per coefficient than this: last-value fallback


# -- pure functions ------------------------------------------------------------------------------
def forward_fill(values: np.ndarray) -> np.ndarray:
    """``values`` (time, n) with each missing point replaced by the last observed one before it
    (points before a series' first observation stay missing)."""
    rows = np.where(np.isfinite(values), np.arange(len(values))[:, None], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return values[rows, np.arange(values.shape[1])]


def lag_inputs(values: np.ndarray, lags: int) -> np.ndarray:
    """Inputs of every origin t of ``values`` (time, n) from row ``lags - 1`` on, shape
    (origins, n, lags): ``y[t-j] - y[t]`` for j = 1..lags-1, then a 1 (the intercept)."""
    t = np.arange(lags - 1, len(values))
    last = values[t]
    return np.stack([values[t - j] - last for j in range(1, lags)] + [np.ones_like(last)], axis=-1)


def lag_targets(values: np.ndarray, lags: int, horizon: int) -> np.ndarray:
    """Targets of the same origins, shape (origins, n, horizon): ``y[t+h] - y[t]``, NaN past the end."""
    t = np.arange(lags - 1, len(values))
    padded = np.vstack([values, np.full((horizon, values.shape[1]), np.nan)])
    return np.stack([padded[t + h] - values[t] for h in range(1, horizon + 1)], axis=-1)


def complete_rows(observed: np.ndarray, lags: int, horizon: int) -> np.ndarray:
    """(origins, n): the origin and all ``horizon`` targets were observed, not filled in."""
    padded = np.vstack([observed, np.zeros((horizon, observed.shape[1]), dtype=bool)])
    t = np.arange(lags - 1, len(observed))
    return np.all([padded[t + h] for h in range(horizon + 1)], axis=0)


def fit_robust(x: np.ndarray, y: np.ndarray, ok: np.ndarray, ridge: float, iterations: int) -> np.ndarray:
    """Coefficients (n, inputs, horizon) minimising each series' absolute error over its rows
    ``ok`` (rows, n), by iteratively reweighted least squares with one weight per row shared by
    every horizon, and a ridge penalty ``ridge`` x (total weight) on every input but the intercept
    (the last). ``x`` and ``y`` must be finite where ``ok``; other rows are ignored."""
    penalty = np.eye(x.shape[-1])
    penalty[-1, -1] = 0.0
    # series first (n, rows, ...), so every product below is one batched matrix multiplication
    x = np.where(ok[..., None], x, 0.0).transpose(1, 0, 2).copy()
    y = np.where(ok[..., None], y, 0.0).transpose(1, 0, 2).copy()
    ok = ok.T
    weights = ok.astype(float)
    for _ in range(iterations + 1):
        weighted = x * weights[..., None]
        gram = weighted.transpose(0, 2, 1) @ x + ridge * weights.sum(axis=1)[:, None, None] * penalty[None]
        coef = np.linalg.solve(gram, weighted.transpose(0, 2, 1) @ y)
        size = np.abs(y - x @ coef).mean(axis=-1)
        floor = 0.05 * _nanquantile(np.where(ok, size, np.nan).T, [0.5])[0] + 1e-9
        weights = ok / np.maximum(size, floor[:, None])
    return coef


# -- the estimator ------------------------------------------------------------------------------
class DirectAR(VectorForecaster):
    """A robust linear model of each of the next ``max_horizon`` steps on the last ``lags`` values.

    ``lags`` None: two hours of steps (24 at 5 minutes), at least 3. ``max_horizon`` None: the
    horizon passed to :meth:`fit_many`, else one hour of steps; beyond it the forecast holds the
    last modelled step (with its interval). ``fit_window``: the steps a fit learns from (a week at
    5 minutes, None: all), so a refit costs the same however long the history. ``interval_window``:
    how many recent origins' errors the intervals are quantiles of. Series with too few complete
    rows to fit fall back to the last value and say so.
    """

    name = "ar"

    def __init__(
        self,
        lags: int | None = None,
        max_horizon: int | None = None,
        fit_window: int | None = 2016,
        ridge: float = 1e-3,
        iterations: int = 3,
        interval_window: int = 576,
    ) -> None:
        self.lags = lags
        self.max_horizon = max_horizon
        self.fit_window = fit_window
        self.ridge = ridge
        self.iterations = iterations
        self.interval_window = interval_window

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> DirectAR:
        self.horizon_hint_ = horizon
        return super().fit_many(frame, horizon)

    def _fit_values(self, values: np.ndarray) -> None:
        hour = steps_per(HOUR, self.step_)
        self.lags_ = self.lags or max(3, 2 * hour)
        self.horizon_ = self.max_horizon or self.horizon_hint_ or hour
        window = values[-self.fit_window :] if self.fit_window else values
        if not np.isfinite(window).any(axis=0).all():
            window = values  # a series with nothing recent: learn from its whole history
        filled = forward_fill(window)
        observed = np.isfinite(window)
        ok = complete_rows(observed, self.lags_, self.horizon_)
        self.scale_ = _step_scale(filled)
        x = _scaled(lag_inputs(filled, self.lags_), self.scale_)
        y = lag_targets(filled, self.lags_, self.horizon_) / self.scale_[None, :, None]
        ok &= np.isfinite(x).all(axis=-1)
        enough = ok.sum(axis=0) >= MIN_ROWS_PER_INPUT * self.lags_
        self.coef_ = np.zeros((values.shape[1], self.lags_, self.horizon_))
        if enough.any():
            self.coef_[enough] = fit_robust(x[:, enough], y[:, enough], ok[:, enough], self.ridge, self.iterations)
        self.fallback_ = ~enough
        scored = max(0, len(x) - self.horizon_)  # the last origins' targets are yet to come: update() scores them
        self.errors_ = self._errors(x[:scored], y[:scored], ok[:scored])[-self.interval_window :]
        keep = self.lags_ + self.horizon_
        self.recent_, self.recent_seen_ = filled[-keep:], observed[-keep:]

    def _update_values(self, values: np.ndarray) -> None:
        """Advance the inputs by the new rows; every origin whose targets are now all known adds its
        out-of-sample errors to the interval window (the coefficients wait for the next fit)."""
        seen = np.vstack([self.recent_seen_, np.isfinite(values)])
        context = forward_fill(np.vstack([self.recent_, values]))
        x = _scaled(lag_inputs(context, self.lags_), self.scale_)
        # origins whose last target was in the old rows were scored before (at the fit or an update)
        rows = slice(max(0, len(self.recent_) - self.horizon_ - self.lags_ + 1), len(x) - self.horizon_)
        y = lag_targets(context, self.lags_, self.horizon_) / self.scale_[None, :, None]
        ok = complete_rows(seen, self.lags_, self.horizon_) & np.isfinite(x).all(axis=-1)
        self.errors_ = np.concatenate([self.errors_, self._errors(x[rows], y[rows], ok[rows])])[-self.interval_window :]
        keep = self.lags_ + self.horizon_
        self.recent_, self.recent_seen_ = context[-keep:], seen[-keep:]

    def _errors(self, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Each origin's errors (origins, n, horizon) in scaled units; NaN where a row is incomplete.
        Single precision: only their quantiles are read, and sorting them is most of a forecast's cost."""
        with np.errstate(invalid="ignore"):
            errors = y - np.einsum("rnf,nfh->rnh", np.nan_to_num(x), self.coef_, optimize=True)
        return np.where(ok[..., None], errors, np.nan).astype(np.float32)

    def _mean_bounds(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _scaled(lag_inputs(self.recent_[-self.lags_ :], self.lags_), self.scale_)[-1]
        steps = np.minimum(np.arange(horizon), self.horizon_ - 1)
        change = np.einsum("nf,nfh->nh", x, self.coef_)[:, steps]
        low, high = _nanquantile(self.errors_, [(1 - level) / 2, (1 + level) / 2])[..., steps]
        scale = self.scale_[:, None]
        mean = self.recent_[-1][:, None] + change * scale
        return mean, mean + low * scale, mean + high * scale

    def _note(self, i: int) -> str:
        return "too few complete rows to fit: last value" if self.fallback_[i] else ""


def _step_scale(values: np.ndarray) -> np.ndarray:
    """Each series' mean absolute one-step change (1 where it has none): the unit the inputs,
    targets and the ridge penalty are measured in, so one penalty suits bytes and packets alike."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmean(np.abs(np.diff(values, axis=0)), axis=0)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _scaled(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Lag differences in each series' unit; the intercept column stays 1."""
    out = x / scale[None, :, None]
    out[..., -1] = 1.0
    return out


def _nanquantile(errors: np.ndarray, q: list[float]) -> np.ndarray:
    """Quantiles over axis 0 of each column, skipping NaN, shape (len(q), *columns); 0 where a
    column has no value. Linear interpolation, as ``np.nanquantile``, which loops in Python per
    column and cost seconds per backtest here; without NaN a partial sort does."""
    if len(errors) and not np.isnan(errors).any():
        positions = [p * (len(errors) - 1) for p in q]
        ranks = sorted({r for p in positions for r in (int(np.floor(p)), min(int(np.floor(p)) + 1, len(errors) - 1))})
        part = np.partition(errors, ranks, axis=0)
        below = [int(np.floor(p)) for p in positions]
        return np.array([part[b] + (p - b) * (part[min(b + 1, len(errors) - 1)] - part[b]) for p, b in zip(positions, below, strict=True)])
    ordered = np.sort(errors, axis=0)  # NaN sort last
    count = np.isfinite(errors).sum(axis=0)
    out = []
    for p in q:
        position = p * np.maximum(count - 1, 0)
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        low = np.take_along_axis(ordered, below[None], axis=0)[0]
        high = np.take_along_axis(ordered, above[None], axis=0)[0]
        out.append(np.where(count > 0, low + (position - below) * (high - low), 0.0))
    return np.array(out)
