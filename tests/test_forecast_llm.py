"""The LLM trend forecaster on its digit-vocabulary base: digit text both ways, the estimator
contract, persistence and the CLI (the serving edge model's trend adapter: tests/test_forecast_trend.py).

Every model here is the tiny preset trained for a few dozen steps: these tests check behaviour
(shapes, ordering, determinism, what is dropped and what falls back), not accuracy, which
``bench/forecast.py`` measures on the Milan protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from forecasting import registry
from forecasting.data import load_series_frame
from forecasting.digits import DigitCodec, SpacedDigitCodec
from forecasting.llm import LlmForecaster, build_digit_base
from nm_toolkit.cli import app
from nm_toolkit.errors import UserError
from nm_toolkit.llm.tokenizer import train_bpe_tokenizer

DATA = Path(__file__).parent / "data" / "milan_4cells_21days.csv"
TINY = {"preset": "tiny", "base_steps": 30, "context_points": 48, "chunk_points": 12, "max_windows": 48, "samples": 4, "seed": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    frame, _ = load_series_frame(DATA)
    return frame.iloc[: 7 * 24, :2]


def test_digit_text_round_trip_within_half_a_unit_of_precision() -> None:
    codec = DigitCodec(precision=2, alpha=0.95)
    values = np.array([0.0, 3.0, 41.7, 120.0, 80.25, 99.0])
    scale = codec.scale(values)
    text = codec.encode(values, scale)
    fields = text.split(" ")
    assert len(fields) == len(values) and all(len(f) == 3 and f.isdigit() for f in fields)
    decoded = codec.decode(text, scale, len(values))
    assert np.max(np.abs(decoded - values)) <= 0.5 * scale / 100 + 1e-9
    assert codec.encode(np.array([0.42, 1.05, 0.0, 12.0, -3.0]), 1.0) == "042 105 000 999 000"  # clipped to 0..9.99


def test_scale_survives_all_zero_and_missing_windows() -> None:
    codec = DigitCodec()
    assert codec.scale(np.zeros(24)) == 1.0
    assert codec.scale(np.array([np.nan, 0.0, 0.0, 4.0])) == pytest.approx(np.quantile([0.0, 0.0, 4.0], 0.95))


def test_parser_drops_malformed_samples() -> None:
    codec = DigitCodec(precision=2)
    assert codec.decode("042 105 007 999", 2.0, 3) == pytest.approx([0.84, 2.10, 0.14])
    for malformed in ("042 105", "042 1o5 007", "042 -05 007", "042 10 007", "042 1050 007", ""):
        assert codec.decode(malformed, 2.0, 3) is None, malformed


def test_tokenizer_spells_each_value_as_one_token_and_text_bpe_does_not() -> None:
    codec = DigitCodec(precision=2)
    tokenizer = codec.tokenizer()
    ids = tokenizer("042 105 999", add_special_tokens=False).input_ids
    assert len(ids) == 3 and codec.fits(tokenizer)
    assert tokenizer.decode(ids) == "042 105 999"
    text_bpe = train_bpe_tokenizer([codec.encode(np.arange(0, 10, 0.37), 1.0)] * 20 + ["reading 4 2 1 0"] * 20, 300)
    assert not codec.fits(text_bpe)


def test_fit_predict_shapes_ordered_intervals_and_seeded_reproducibility(week: pd.DataFrame) -> None:
    horizon = 30  # two full chunks and a partial third
    first = LlmForecaster(**TINY).forecast_many(week, horizon, level=0.8)
    again = LlmForecaster(**TINY).forecast_many(week, horizon, level=0.8)
    assert list(first) == [str(c) for c in week.columns]
    for key, fc in first.items():
        assert fc.model == "llm" and "fallback" not in fc.note
        assert fc.mean.shape == fc.lower.shape == fc.upper.shape == (horizon,)
        assert np.all(np.isfinite(fc.mean)) and np.all(fc.mean >= 0)
        assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)
        assert fc.index[0] == week.index[-1] + pd.Timedelta(hours=1) and len(fc.index) == horizon
        np.testing.assert_array_equal(fc.mean, again[key].mean)
        np.testing.assert_array_equal(fc.upper, again[key].upper)
    other_seed = LlmForecaster(**{**TINY, "seed": 4}).forecast_many(week, horizon, level=0.8)
    assert any(not np.array_equal(first[k].mean, other_seed[k].mean) for k in first)


def test_saved_adapter_round_trips_to_the_same_forecast(week: pd.DataFrame, tmp_path: Path) -> None:
    series = week.iloc[:, 0]
    with pytest.raises(UserError, match="pass base_model"):  # a base built in the process has no directory to name
        LlmForecaster(**TINY).fit(series).save_adapter(tmp_path / "adapters")
    model, tokenizer, _ = build_digit_base("tiny", 30, 60, seed=3)
    model.save_pretrained(tmp_path / "digits")
    tokenizer.save_pretrained(tmp_path / "digits")
    fitted = LlmForecaster(**{**TINY, "base_model": tmp_path / "digits"}).fit(series)
    assert isinstance(fitted.codec_, DigitCodec) and not isinstance(fitted.codec_, SpacedDigitCodec)
    expected = fitted.predict(12)
    card = fitted.save_adapter(tmp_path / "adapters")
    assert card.base == str((tmp_path / "digits").resolve())
    restored = LlmForecaster.from_adapter(tmp_path / "adapters")
    got = restored.fit(series).predict(12)
    assert restored.losses_ == []  # the saved adapter was reused, not tuned again
    np.testing.assert_allclose(got.mean, expected.mean)
    np.testing.assert_allclose(got.lower, expected.lower)


def test_short_series_fall_back_and_base_checks_are_one_line_errors(week: pd.DataFrame, tmp_path: Path) -> None:
    frame = week.copy()
    frame.iloc[: len(frame) - 20, 1] = np.nan  # 20 observed points, fewer than the 48-point context
    forecasts = LlmForecaster(**TINY).forecast_many(frame, 12)
    assert "fallback" in forecasts[str(frame.columns[1])].note and forecasts[str(frame.columns[0])].model == "llm"
    too_short = LlmForecaster(**TINY).forecast_many(week.iloc[:50], 12)  # 50 points < 48 + 12 of a tuning window
    assert all("tuning window: seasonal-naive fallback" in fc.note and fc.model == "seasonal_naive" for fc in too_short.values())
    with pytest.raises(UserError, match="no trend adapter"):
        LlmForecaster.from_adapter(tmp_path)
    with pytest.raises(UserError, match="no model directory"):
        LlmForecaster(**{**TINY, "base_model": tmp_path / "missing"}).fit(week.iloc[:, 0])


def test_cli_backtest_runs_the_llm_next_to_a_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    # the registered edge-sized model trains for minutes; the CLI path is the same with the tiny preset
    monkeypatch.setitem(registry.BUILDERS, "llm", lambda day, week, settings: LlmForecaster(**TINY))
    result = CliRunner().invoke(
        app, ["forecast", "backtest", "--input", str(DATA), "--train-days", "7", "--horizon", "24",
              "--models", "llm,snaive_daily", "--series", "10,1001", "--json"],
    )
    assert result.exit_code == 0, result.output
    models = {m["model"]: m for m in json.loads(result.stdout)["models"]}
    assert set(models) == {"last_value", "llm", "snaive_daily"}  # the baseline joins every backtest
    assert 0 < models["llm"]["mase"] < 10 and 0 <= models["llm"]["coverage"] <= 1 and models["llm"]["seconds_per_series"] > 0
