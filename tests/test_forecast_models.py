"""Every forecaster recovers known synthetic structure; fallbacks say what they did; metrics are exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import SeasonalNaive
from forecasting.backtest import backtest, fixed_origin, rolling_origins
from forecasting.combine import Combination
from forecasting.gbm import GlobalGBM
from forecasting.metrics import coverage, mae, mase, rmse, seasonal_scale, smape
from forecasting.naive import SeasonalMean
from forecasting.select import AutoSelect
from forecasting.statistical import ETS, SARIMA

HOURS = 24 * 23  # from Monday 2024-01-01: the last two days are weekdays


def synthetic(
    n_series: int = 6, periods: int = HOURS, noise: float = 0.5, seed: int = 0, weekend: float = 0.8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Series = level * (1 + daily sine) with quieter weekends, plus Gaussian noise; returns (noisy, truth)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=periods, freq="h", tz="UTC")
    hours = np.asarray(index.hour)[:, None]
    is_weekend = np.asarray(index.day_of_week >= 5)[:, None]
    level = rng.uniform(20, 200, size=(1, n_series))
    truth = level * (1 + 0.5 * np.sin(2 * np.pi * hours / 24)) * np.where(is_weekend, weekend, 1.0)
    noisy = truth + rng.normal(0, noise, size=truth.shape) * level / 20
    columns = [f"s{i}" for i in range(n_series)]
    return pd.DataFrame(noisy, index, columns), pd.DataFrame(truth, index, columns)


def relative_error(forecast: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(forecast - truth)) / np.mean(np.abs(truth)))


@pytest.mark.parametrize(
    "model, tolerance, weekend",
    [
        (SeasonalNaive(24 * 7), 0.05, 0.8),
        (SeasonalMean(24, seasons=7), 0.05, 1.0),  # daily models get series without a weekly cycle
        (ETS(24), 0.05, 1.0),
        (GlobalGBM(max_iter=100), 0.06, 0.8),
        (Combination([GlobalGBM(max_iter=50), SeasonalNaive(24 * 7)]), 0.06, 0.8),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_forecasters_recover_daily_and_weekly_structure(model, tolerance: float, weekend: float) -> None:
    noisy, truth = synthetic(weekend=weekend)
    train, horizon = HOURS - 48, 48
    forecasts = model.forecast_many(noisy.iloc[:train], horizon, 0.9)
    for column in noisy.columns:
        fc = forecasts[column]
        assert fc.index[0] == noisy.index[train]
        assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)
        assert relative_error(fc.mean, truth[column].iloc[train:].to_numpy()) < tolerance, column


def test_sarima_recovers_daily_cycle_on_one_series() -> None:
    noisy, truth = synthetic(n_series=1, periods=24 * 8, weekend=1.0)
    fc = SARIMA(season_length=24).fit(noisy["s0"].iloc[:-24]).predict(24, 0.9)
    assert relative_error(fc.mean, truth["s0"].iloc[-24:].to_numpy()) < 0.1
    assert 0.6 <= coverage(noisy["s0"].iloc[-24:].to_numpy(), fc.lower, fc.upper) <= 1.0


def test_global_gbm_intervals_cover_about_their_level() -> None:
    noisy, _ = synthetic(n_series=8, noise=2.0, seed=3)
    train = HOURS - 24
    forecasts = GlobalGBM(max_iter=100).forecast_many(noisy.iloc[:train], 24, 0.8)
    covered = np.mean([coverage(noisy[c].iloc[train:].to_numpy(), f.lower, f.upper) for c, f in forecasts.items()])
    assert 0.6 <= covered <= 0.97


def test_short_history_falls_back_and_says_so() -> None:
    noisy, _ = synthetic(n_series=2, periods=30)
    for model in (SeasonalNaive(24), SeasonalMean(24), ETS(24)):
        fc = model.fit(noisy["s0"]).predict(5)
        assert "shorter than two seasons" in fc.note and np.isfinite(fc.mean).all()
    frame = noisy.copy()
    frame.iloc[:-10, 1] = np.nan  # s1 starts late: only 10 points
    forecasts = GlobalGBM(max_iter=20).forecast_many(frame, 6)
    assert "fallback" in forecasts["s1"].note and np.isfinite(forecasts["s1"].mean).all()


def test_missing_windows_late_start_and_zeros_are_handled() -> None:
    noisy, truth = synthetic(n_series=3)
    frame = noisy.copy()
    frame.iloc[:100, 0] = np.nan  # late start
    frame.iloc[200:230, 1] = np.nan  # an outage
    frame.iloc[:, 2] = 0.0  # a silent cell
    frame = frame.drop(frame.index[300:305])  # rows that never arrived
    forecasts = SeasonalMean(24).forecast_many(frame.iloc[:-24], 24)
    assert "starts late" in forecasts["s0"].note
    assert "missing windows filled" in forecasts["s1"].note
    assert np.allclose(forecasts["s2"].mean, 0.0)
    gbm = GlobalGBM(max_iter=50).forecast_many(frame.iloc[:-24], 24)
    assert relative_error(gbm["s1"].mean, truth["s1"].iloc[-24:].to_numpy()) < 0.1
    assert np.isfinite(gbm["s2"].mean).all() and np.abs(gbm["s2"].mean).max() < 1e-6


def test_auto_select_picks_the_model_that_fits_each_series() -> None:
    noisy, _ = synthetic(n_series=4, noise=0.1)
    frame = noisy.copy()
    frame["flat"] = 50.0 + np.random.default_rng(1).normal(0, 0.1, len(frame))
    frame["trend"] = np.arange(len(frame), dtype=float)  # a ramp: yesterday is always 24 too low
    auto = AutoSelect([SeasonalNaive(24 * 7), SeasonalNaive(1)], folds=2)
    forecasts = auto.forecast_many(frame, 24)
    assert forecasts["s0"].model == "seasonal_naive" and "auto-selected" in forecasts["s0"].note
    assert forecasts["trend"].mean[0] == pytest.approx(len(frame) - 1)  # the naive (last value) candidate won


def test_metrics_exact_values() -> None:
    actual, forecast = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert mae(actual, forecast) == 0.5
    assert rmse(actual, forecast) == pytest.approx(np.sqrt(0.5))
    history = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 2.0])
    assert seasonal_scale(history, 2) == pytest.approx(0.25)
    assert mase(actual, forecast, history, 2) == pytest.approx(2.0)
    assert np.isnan(seasonal_scale(np.ones(10), 2))
    assert smape([0.0, 2.0], [0.0, 2.0]) == 0.0 and np.isnan(smape([0.0], [0.0]))
    assert smape([1.0], [3.0]) == pytest.approx(100.0)
    assert coverage(actual, actual - 0.5, actual + 0.5) == 1.0
    assert coverage(actual, forecast, forecast) == 0.5


def test_origins_and_backtest_scores() -> None:
    assert fixed_origin(100, 80, 24) == [80]
    assert rolling_origins(100, 50, 12, 12) == [50, 62, 74, 86]
    with pytest.raises(ValueError, match="shorten the horizon"):
        rolling_origins(100, 95, 12, 12)
    noisy, _ = synthetic(n_series=3)
    result = backtest(noisy, {"weekly": SeasonalNaive(168), "daily": SeasonalNaive(24)}, [HOURS - 48, HOURS - 24], 24, season=24)
    summary = result.summary()
    assert list(summary.index) == ["weekly", "daily"] and len(result.scores) == 2 * 3 * 2
    assert summary.loc["weekly", "mase"] < summary.loc["daily", "mase"]  # weekends defeat yesterday's profile
    assert (summary["seconds_per_series"] > 0).all()


def test_a_weighted_combination_weighs_means_and_bounds_and_updates_alike() -> None:
    index = pd.date_range("2024-01-01", periods=24 * 14, freq="h")
    frame = pd.DataFrame({"flat": np.full(len(index), 10.0), "ramp": np.arange(len(index), dtype=float)}, index=index)
    naive, mean = SeasonalNaive(24), SeasonalMean(24, seasons=7)
    weighted = Combination([naive, mean], weights=(1, 3)).forecast_many(frame, 24)
    each = naive.forecast_many(frame, 24), mean.forecast_many(frame, 24)
    for column in frame.columns:
        for part in ("mean", "lower", "upper"):
            expected = (getattr(each[0][column], part) + 3 * getattr(each[1][column], part)) / 4
            assert np.allclose(getattr(weighted[column], part), expected)
    updated = Combination([naive, mean], weights=(1, 3)).fit_many(frame.iloc[:-24]).update(frame.iloc[-24:]).predict_many(24)
    assert np.allclose(updated["ramp"].mean, weighted["ramp"].mean)
