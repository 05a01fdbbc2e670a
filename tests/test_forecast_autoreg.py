"""The direct autoregression, the auto rule (never a model that lost to the last value on the
series' own folds), and ``nmt forecast backtest``'s incremental path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.autoreg import DirectAR, forward_fill, lag_inputs, lag_targets
from forecasting.backtest import (
    backtest,
    default_refits,
    refit_schedule,
    rolling_origins,
    with_baseline,
)
from forecasting.registry import make_model
from forecasting.select import AutoSelect
from forecasting.short import LastValue
from tests.test_forecast_cli import nmt

FIVE_MIN = pd.Timedelta(minutes=5)


def frame_of(values: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2024-03-04", periods=len(values), freq=FIVE_MIN)
    return pd.DataFrame(values, index=index, columns=[f"s{i}" for i in range(values.shape[1])])


def hourly_transfers(n: int, periods: int, seed: int = 0) -> np.ndarray:
    """Flows with a scheduled transfer in 3 of every 12 windows on a noisy base: the last value is
    wrong most of the time, the value an hour earlier is right."""
    rng = np.random.default_rng(seed)
    phase = rng.integers(0, 12, n)
    pulse = ((np.arange(periods)[:, None] + phase[None, :]) % 12 < 3) * 40.0
    return 20 + pulse + rng.normal(0, 2, (periods, n))


def test_lag_design_is_relative_to_the_last_value() -> None:
    values = np.arange(10.0)[:, None] ** 2
    x, y = lag_inputs(values, 3), lag_targets(values, 3, 2)
    assert x.shape == (8, 1, 3) and y.shape == (8, 1, 2)
    assert x[0, 0].tolist() == [1 - 4, 0 - 4, 1.0]  # y[t-1] - y[t], y[t-2] - y[t], intercept
    assert y[0, 0].tolist() == [9 - 4, 16 - 4] and np.isnan(y[-1, 0]).all()
    gappy = np.array([[np.nan], [1.0], [np.nan], [3.0]])
    assert np.isnan(forward_fill(gappy)[0, 0]) and forward_fill(gappy)[2, 0] == 1.0


def test_learns_hourly_transfers_the_last_value_misses() -> None:
    values = hourly_transfers(n=20, periods=3 * 288 + 12)
    frame = frame_of(values)
    forecasts = DirectAR().forecast_many(frame.iloc[:-12], 12)
    actual = values[-12:].T
    ar_error = np.mean([np.abs(forecasts[c].mean - actual[i]) for i, c in enumerate(frame.columns)])
    last_error = np.abs(actual - values[-13][:, None]).mean()
    assert ar_error < 0.25 * last_error
    inside = np.mean([(actual[i] >= forecasts[c].lower) & (actual[i] <= forecasts[c].upper) for i, c in enumerate(frame.columns)])
    assert 0.75 <= inside <= 1.0


def test_intervals_are_quantiles_of_recent_errors_and_cover_on_noisy_series() -> None:
    rng = np.random.default_rng(4)
    values = 100 + np.cumsum(rng.standard_t(4, (2 * 288 + 12, 300)), axis=0)  # heavy-tailed random walks
    frame = frame_of(values)
    forecasts = DirectAR(lags=6).forecast_many(frame.iloc[:-12], 12, level=0.9)
    actual = values[-12:].T
    inside = np.array([(actual[i] >= forecasts[c].lower) & (actual[i] <= forecasts[c].upper) for i, c in enumerate(frame.columns)])
    assert 0.84 <= inside.mean() <= 0.96
    widths = np.mean([forecasts[c].upper - forecasts[c].lower for c in frame.columns], axis=0)
    assert widths[-1] > 2 * widths[0]  # twelve steps ahead is wider than one


def test_update_advances_inputs_and_adds_out_of_sample_errors_without_refitting() -> None:
    frame = frame_of(hourly_transfers(n=3, periods=2 * 288 + 48, seed=1))
    model = DirectAR(interval_window=10_000).fit_many(frame.iloc[:-36], 12)
    coef, errors = model.coef_.copy(), len(model.errors_)
    model.update(frame.iloc[-36:-24]).update(frame.iloc[-24:])
    assert np.array_equal(model.coef_, coef)  # coefficients wait for the next fit
    assert len(model.errors_) == errors + 36  # every origin whose hour is now known, once
    forecast = model.predict_many(12)["s0"]
    assert forecast.index[0] == frame.index[-1] + FIVE_MIN
    assert forecast.mean[0] == pytest.approx(frame_of_truth(model, frame)[0])


def frame_of_truth(model: DirectAR, frame: pd.DataFrame) -> np.ndarray:
    """The forecast of series 0 from its fitted coefficients and the last ``lags`` values of ``frame``."""
    recent = frame["s0"].to_numpy()[-model.lags_ :]
    x = np.append((recent[-2::-1] - recent[-1]) / model.scale_[0], 1.0)
    return recent[-1] + x @ model.coef_[0] * model.scale_[0]


def test_missing_points_late_starts_and_too_short_histories() -> None:
    values = hourly_transfers(n=3, periods=2 * 288, seed=2)
    values[np.random.default_rng(0).random(values.shape) < 0.02] = np.nan
    values[:500, 1] = np.nan  # starts late: too few complete rows for 24 inputs
    forecasts = DirectAR().forecast_many(frame_of(values), 12)
    assert all(np.isfinite(fc.mean).all() and np.isfinite(fc.lower).all() for fc in forecasts.values())
    assert "last value" in forecasts["s1"].note and forecasts["s0"].note == ""
    assert forecasts["s1"].mean[0] == values[-1, 1] or np.isnan(values[-1, 1])


def test_auto_never_picks_a_model_that_lost_to_the_last_value_on_its_folds() -> None:
    rng = np.random.default_rng(5)
    walks = 100 + np.cumsum(rng.normal(0, 1, (3 * 288, 6)), axis=0)  # the last value is as good as it gets
    values = np.hstack([walks, hourly_transfers(n=4, periods=3 * 288, seed=3)])
    auto = make_model("auto", FIVE_MIN)
    forecasts = auto.forecast_many(frame_of(values), 12)
    for fc in forecasts.values():
        chosen = re.search(r"auto-selected (\w+) over \d+ folds(?:, MAE ([0-9.]+)x last_value's)?", fc.note)
        assert chosen, fc.note
        assert chosen.group(1) == "last_value" or float(chosen.group(2)) < 1.0, fc.note
    assert all(forecasts[f"s{i}"].model == "ar" for i in range(6, 10))


def test_auto_select_ties_go_to_the_first_candidate() -> None:
    frame = frame_of(hourly_transfers(n=2, periods=3 * 288))
    forecasts = AutoSelect([LastValue(), LastValue()], folds=3, validation_horizon=12).forecast_many(frame, 12)
    assert all("auto-selected last_value over 3 folds" == fc.note for fc in forecasts.values())


def test_schedules_and_baseline_of_the_shared_backtest() -> None:
    models = {name: make_model(name, FIVE_MIN) for name in ("ar", "gbm_short", "ensemble", "auto")}
    assert refit_schedule(models, 24, 168) == {"ar": 24, "gbm_short": 168, "ensemble": 168, "auto": 24}
    assert default_refits(12, 288) == (24, 168) and default_refits(288, 288) == (1, 7)
    assert next(iter(with_baseline(models))) == "last_value"
    frame = frame_of(hourly_transfers(n=3, periods=2 * 288 + 48))
    origins = rolling_origins(len(frame), 2 * 288, 12, 12)
    result = backtest(frame, with_baseline({"ar": DirectAR()}), origins, 12, season=288, refit_every=2)
    summary = result.summary()
    assert summary.loc["last_value", "mae_vs_last_value"] == 1.0 and summary.loc["ar", "mae_vs_last_value"] < 0.5


def five_minute_transfers_csv(path: Path) -> Path:
    frame = frame_of(hourly_transfers(n=4, periods=7 * 288 + 48, seed=7)).round(3)
    frame.rename_axis("timestamp").to_csv(path)
    return path


def test_cli_rolling_backtest_updates_between_daily_refits(tmp_path: Path) -> None:
    path = five_minute_transfers_csv(tmp_path / "flows.csv")
    args = ["forecast", "backtest", "--input", str(path), "--train-days", "7", "--horizon", "12", "--rolling", "--step", "12"]
    code, out = nmt(*args, "--models", "ar,auto,gbm_short", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["origins"] == 4 and data["refit_every"] == 24 and data["global_refit_every"] == 168
    models = {m["model"]: m for m in data["models"]}
    assert list(models) == ["last_value", "ar", "auto", "gbm_short"]
    assert models["ar"]["mae_vs_last_value"] < 0.5 and models["auto"]["mae_vs_last_value"] < 0.5
    assert all(0 <= m["coverage"] <= 1 for m in models.values())
    # an exact incremental model scores the same whether it refits at every origin or updates between
    code, out = nmt(*args, "--models", "last_value", "--refit-every", "1", "--json")
    assert json.loads(out)["models"][0]["mae"] == models["last_value"]["mae"] and json.loads(out)["refit_every"] == 1
    code, out = nmt(*args, "--models", "ar", "--refit-every", "0")
    assert code == 2 and out.startswith("error: --refit-every must be positive")
