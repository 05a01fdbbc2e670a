"""Short-horizon forecasters: exact incremental updates, calibrated intervals, selection, rolling backtests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from collectors.synthetic import SyntheticTelemetry
from forecasting.backtest import backtest, rolling_origins
from forecasting.naive import SeasonalMean, SeasonalNaive
from forecasting.registry import make_model
from forecasting.select import AutoSelect
from forecasting.short import Drift, HoltES, LastValue, SimpleES

FIVE_MIN = pd.Timedelta(minutes=5)


def frame_of(values: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(values), freq="5min", tz="UTC")
    return pd.DataFrame(values, index=index, columns=[f"s{i}" for i in range(values.shape[1])])


def random_walks(n: int = 200, periods: int = 600, seed: int = 0, missing: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = 100 + np.cumsum(rng.normal(0, 1, (periods, n)), axis=0)
    values[rng.random(values.shape) < missing] = np.nan
    return frame_of(values)


@pytest.mark.parametrize(
    "model",
    [LastValue(), Drift(), SimpleES(alpha=0.3, fit_window=None), HoltES(alpha=0.4, beta=0.05, fit_window=None)],
    ids=lambda m: m.name,
)
def test_update_equals_refit_on_the_same_data(model) -> None:
    frame = random_walks(n=5, periods=400, missing=0.05)
    frame.iloc[390:, 2] = np.nan  # a missing tail: the forecast must count the steps since the last point
    updated = type(model)(**model.get_params()).fit_many(frame.iloc[:250])
    updated.update(frame.iloc[250:300]).update(frame.iloc[300:])
    refit = type(model)(**model.get_params()).fit_many(frame)
    a, b = updated.predict_many(12), refit.predict_many(12)
    for column in frame.columns:
        np.testing.assert_allclose(a[column].mean, b[column].mean, rtol=1e-10)
        np.testing.assert_allclose(a[column].upper, b[column].upper, rtol=1e-10)
        assert a[column].index.equals(b[column].index)
    # and one series through fit/update/predict
    single = type(model)(**model.get_params()).fit(frame["s0"].iloc[:300]).update(frame["s0"].iloc[300:])
    np.testing.assert_allclose(single.predict(12).mean, b["s0"].mean, rtol=1e-10)


@pytest.mark.parametrize("model", [SeasonalMean(24, seasons=3), SeasonalNaive(24), SeasonalNaive(1)], ids=lambda m: f"{m.name}-{m.season_length}")
def test_seasonal_update_equals_refit_on_complete_data(model) -> None:
    """Through a short history (naive rule), a growing number of seasons, and a late-starting series."""
    rng = np.random.default_rng(4)
    daily = 10 * np.sin(np.arange(300) * 2 * np.pi / 24)[:, None]
    frame = frame_of(50 + daily + rng.normal(0, 2, (300, 4)))
    frame.iloc[:20, 3] = np.nan  # starts late (inside the first fit)
    updated = clone(model).fit_many(frame.iloc[:30])
    for lo, hi in ((30, 31), (31, 60), (60, 200), (200, 300)):
        updated.update(frame.iloc[lo:hi])
        refit = clone(model).fit_many(frame.iloc[:hi]).predict_many(30)
        for column, fc in updated.predict_many(30).items():
            np.testing.assert_allclose(fc.mean, refit[column].mean, rtol=1e-10)
            np.testing.assert_allclose(fc.upper, refit[column].upper, rtol=1e-10)
            assert fc.note == refit[column].note


def test_seasonal_update_fills_a_missing_point_with_the_value_a_day_earlier() -> None:
    hours = pd.date_range("2024-01-01", periods=24 * 3, freq="h", tz="UTC")
    frame = pd.DataFrame({"s0": np.arange(24 * 3, dtype=float)}, index=hours)
    model = SeasonalNaive(24).fit_many(frame.iloc[:48])
    new = frame.iloc[48:].copy()
    new.iloc[12, 0] = np.nan
    model.update(new)
    assert model.predict(24).mean[12] == 36.0  # hour 60 repaired from hour 36
    assert "1 missing windows filled" in model.predict(24).note


def test_update_rejects_points_that_do_not_follow_the_history() -> None:
    frame = random_walks(n=2, periods=100)
    model = LastValue().fit_many(frame.iloc[:60])
    with pytest.raises(ValueError, match="follow the fitted history"):
        model.update(frame.iloc[50:70])


def test_point_forecasts_follow_their_definitions() -> None:
    y = frame_of(np.array([[1.0], [2.0], [np.nan], [4.0], [6.0]]))["s0"]
    assert LastValue().fit(y).predict(3).mean.tolist() == [6.0, 6.0, 6.0]
    assert Drift().fit(y).predict(2).mean.tolist() == pytest.approx([7.25, 8.5])  # (6 - 1) / 4 per step
    assert SimpleES(alpha=1.0).fit(y).predict(2).mean.tolist() == [6.0, 6.0]  # alpha 1 is the last value
    # SES by hand with alpha 0.5: level 1 -> 1.5 -> (missing) 1.5 -> 2.75 -> 4.375
    assert SimpleES(alpha=0.5).fit(y).predict(1).mean[0] == pytest.approx(4.375)
    ramp = frame_of(np.arange(50, dtype=float)[:, None])["s0"]
    assert HoltES().fit(ramp).predict(3).mean == pytest.approx([50, 51, 52], abs=0.5)  # the trend is learnt


@pytest.mark.parametrize("model", [LastValue(), Drift(), SimpleES()], ids=lambda m: m.name)
def test_intervals_cover_at_the_nominal_rate_on_random_walks(model) -> None:
    frame = random_walks(n=300, periods=412, seed=1)
    fc = model.forecast_many(frame.iloc[:400], 12, level=0.9)
    actual = frame.iloc[400:].to_numpy().T
    inside = np.array([(actual[i] >= fc[c].lower) & (actual[i] <= fc[c].upper) for i, c in enumerate(frame.columns)])
    assert 0.86 <= inside.mean() <= 0.94
    assert inside[:, 0].mean() == pytest.approx(0.9, abs=0.05)  # one step ahead as well as twelve


def test_ses_intervals_cover_on_a_local_level_series() -> None:
    rng = np.random.default_rng(2)
    level = 50 + np.cumsum(rng.normal(0, 0.5, (412, 300)), axis=0)
    frame = frame_of(level + rng.normal(0, 1.0, level.shape))
    fc = SimpleES().forecast_many(frame.iloc[:400], 12, level=0.8)
    actual = frame.iloc[400:].to_numpy().T
    inside = np.mean([(actual[i] >= fc[c].lower) & (actual[i] <= fc[c].upper) for i, c in enumerate(frame.columns)])
    assert 0.75 <= inside <= 0.85


def test_rolling_backtest_with_updates_matches_refits_for_exact_models() -> None:
    frame = random_walks(n=4, periods=24 * 12 + 12, missing=0.02)
    origins = rolling_origins(len(frame), 24 * 6, 12, 12)
    models = {"last": LastValue(), "ses": SimpleES(alpha=0.2, fit_window=None)}
    refit = backtest(frame, models, origins, 12, season=1)
    updated = backtest(frame, models, origins, 12, season=1, refit_every=6, keep_forecasts=True)
    pd.testing.assert_frame_equal(refit.scores, updated.scores.drop(columns="forecast"))
    assert len(updated.scores["forecast"].iloc[0]) == 12


def test_auto_short_chooses_by_recent_error_and_auto_uses_short_models_only_for_short_horizons() -> None:
    rng = np.random.default_rng(3)
    n = 2 * 288 + 200
    ramp = np.arange(n) * 2.0 + rng.normal(0, 0.1, n)  # a steady ramp: Holt's trend wins
    walk = 100 + np.cumsum(rng.normal(0, 1, n))
    frame = frame_of(np.column_stack([ramp, walk]))
    forecasts = make_model("auto_short", FIVE_MIN).forecast_many(frame, 12)
    assert forecasts["s0"].model in ("holt", "drift") and "auto-selected" in forecasts["s0"].note
    many = make_model("auto_short", FIVE_MIN).fit_many(frame.iloc[:-12], 12).update(frame.iloc[-12:]).predict_many(12)
    assert many["s0"].model == forecasts["s0"].model
    auto = make_model("auto", pd.Timedelta(hours=1))
    assert isinstance(auto, AutoSelect)
    assert len(auto._considered(pd.Timedelta(hours=1), 168)) == len(auto.candidates)  # day-ahead: unchanged
    assert [c.name for c in auto._considered(FIVE_MIN, 12)] == ["last_value", "drift", "ses", "holt", "ar", "seasonal_mean"]
    assert auto.candidates[0].name == "last_value"  # the baseline every other candidate must beat


def test_gbm_short_reads_the_last_hour_and_follows_a_level_shift() -> None:
    rng = np.random.default_rng(6)
    n = 3 * 288
    daily = 20 * np.sin(np.arange(n) * 2 * np.pi / 288)[:, None]
    values = 100 + daily + rng.normal(0, 1, (n, 8))
    values[-30:, 0] += 80  # a lasting shift in the last 2.5 hours of one series
    model = make_model("gbm_short", FIVE_MIN)
    assert model.recent_lags == 12
    fitted = model.fit_many(frame_of(values), 12)
    assert fitted.X_.shape[1] == 9 + 11  # lags 2..12 next to the day-ahead features (lag 1 is "last")
    assert fitted.predict_many(12)["s0"].mean[0] > values[-1, 1] + 40  # the shifted series is forecast high


def test_synthetic_bursts_and_level_shifts_are_opt_in_and_seeded() -> None:
    plain = SyntheticTelemetry(n_sources=4, periods=600, step_seconds=300, seed=5)
    assert plain.frame().equals(SyntheticTelemetry(n_sources=4, periods=600, step_seconds=300, seed=5, burst_steps=1).frame())
    bursty = SyntheticTelemetry(
        n_sources=4, periods=600, step_seconds=300, seed=5, burst_steps=6, level_shift_probability=0.01
    )
    a, b = bursty.frame(), bursty.frame()
    assert a.equals(b) and not a.equals(plain.frame())
    ratio = (a / plain.frame()).to_numpy()
    assert np.nanmax(np.abs(np.log(ratio[-1]))) > 0  # the levels have shifted by the end
