"""Day-type profiles and the holiday calendar: a holiday is forecast from the Sundays before it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.calendar import DAY_OFF, REDUCED, SATURDAY, WORKING_DAY, day_types, parse_break
from forecasting.combine import Combination
from forecasting.daytype import DayTypeProfile
from forecasting.naive import SeasonalMean
from forecasting.registry import make_model
from nm_toolkit.config import ForecastSettings, Settings
from nm_toolkit.errors import UserError
from tests.test_forecast_cli import DATA, nmt

HOUR = pd.Timedelta(hours=1)
SHAPES = {WORKING_DAY: 10.0, SATURDAY: 6.0, DAY_OFF: 3.0, REDUCED: 8.0}  # the level of each kind of day


def city(start: str, days: int, calendar: str | None, noise: float = 0.0) -> pd.DataFrame:
    """Two hourly series whose every day is flat at its day type's level (times a daily shape)."""
    index = pd.date_range(start, periods=24 * days, freq="h")
    level = np.asarray([SHAPES[t] for t in day_types(index.normalize(), calendar)])
    shape = 1 + 0.5 * np.sin(2 * np.pi * index.hour / 24)
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"cell-{i}": (i + 1) * level * shape + rng.normal(0, noise, len(index)) for i in range(2)}, index=index)


def test_day_types_follow_the_week_and_the_calendar() -> None:
    christmas_week = pd.date_range("2013-12-21", "2013-12-27", freq="D")  # Saturday .. Friday
    assert list(day_types(christmas_week)) == [SATURDAY, DAY_OFF, 0, 0, 0, 0, 0]
    # Friday the 27th is a bridge between St Stephen's and the weekend
    assert list(day_types(christmas_week, "IT")) == [SATURDAY, DAY_OFF, 0, 0, DAY_OFF, DAY_OFF, REDUCED]
    assert day_types([date(2013, 12, 7)], "IT-MI")[0] == DAY_OFF  # Milan's patron saint, a Saturday that year
    with pytest.raises(UserError, match="ISO 3166"):
        day_types(christmas_week, "XX")


def test_the_working_days_of_a_break_over_the_new_year_are_reduced_and_no_other_day_is() -> None:
    days = pd.date_range("2013-12-20", "2014-01-08", freq="D")
    types = dict(zip(days.strftime("%m-%d"), day_types(days, "IT", ["12-23..01-06"]), strict=True))
    assert [d for d, t in types.items() if t == REDUCED] == ["12-23", "12-24", "12-27", "12-30", "12-31", "01-02", "01-03"]
    assert types["12-20"] == types["01-07"] == types["01-08"] == WORKING_DAY  # either side of the break
    assert types["12-28"] == SATURDAY and types["01-06"] == types["01-01"] == DAY_OFF  # Epiphany and New Year stay holidays
    assert list(day_types(days[:4], None, ["12-21..12-22"])) == [WORKING_DAY, SATURDAY, DAY_OFF, WORKING_DAY]
    for wrong in ("13-01..01-06", "12-23", "12-23..02-30"):
        with pytest.raises(UserError, match="MM-DD..MM-DD"):
            parse_break(wrong)


def test_a_holiday_is_forecast_from_the_sundays_with_a_calendar_and_as_a_working_day_without() -> None:
    history = city("2013-11-04", 49, "IT")  # seven weeks of Mondays..Sundays up to Sunday 22 December
    actual = city("2013-12-23", 7, "IT")
    forecast = DayTypeProfile(calendar="IT").forecast_many(history, 7 * 24)
    # Christmas and St Stephen's as Sundays, the bridge on the 27th halfway between a working day and a Saturday
    assert np.allclose(forecast["cell-1"].mean, actual["cell-1"].to_numpy())
    plain = DayTypeProfile().forecast_many(history, 7 * 24)["cell-1"].mean
    christmas = slice(2 * 24, 3 * 24)
    assert np.allclose(plain[christmas], 2 * SHAPES[WORKING_DAY] * (1 + 0.5 * np.sin(2 * np.pi * np.arange(24) / 24)))
    assert forecast["cell-1"].note == ""


def test_updates_give_the_forecast_a_refit_gives() -> None:
    data = city("2013-11-04", 60, "IT", noise=0.5)
    refit = DayTypeProfile(calendar="IT").fit_many(data).predict_many(48)
    updated = DayTypeProfile(calendar="IT").fit_many(data.iloc[:-100]).update(data.iloc[-100:]).predict_many(48)
    for column in data.columns:
        assert np.allclose(updated[column].mean, refit[column].mean)
        assert np.allclose(updated[column].upper, refit[column].upper)
        assert (refit[column].lower < refit[column].mean).all() and (refit[column].mean < refit[column].upper).all()


def test_a_kind_of_day_the_history_lacks_is_forecast_from_the_last_week_and_said() -> None:
    history = city("2013-11-04", 3, None)  # Monday to Wednesday
    forecast = DayTypeProfile().forecast_many(history, 5 * 24)["cell-0"]  # reaches Saturday
    assert "no Saturday and no Sunday or holiday in the history" in forecast.note
    assert np.isfinite(forecast.mean).all() and np.isfinite(forecast.upper).all()


def test_the_ensemble_pairs_the_gbm_with_day_types_only_where_a_calendar_is_set() -> None:
    with_calendar = make_model("ensemble", HOUR, Settings(forecast=ForecastSettings(holidays="IT", breaks=["12-23..01-06"])))
    without = make_model("ensemble", HOUR, Settings())
    assert isinstance(with_calendar, Combination) and isinstance(without, Combination)
    assert isinstance(with_calendar.members[1], DayTypeProfile) and with_calendar.members[1].calendar == "IT"
    assert with_calendar.members[1].breaks == ("12-23..01-06",) and with_calendar.weights == (1, 4)
    assert isinstance(without.members[1], SeasonalMean)


def test_backtest_takes_a_holiday_calendar_and_breaks_and_refuses_unknown_ones(tmp_path: Path) -> None:
    code, out = nmt("forecast", "backtest", "--input", str(DATA), "--train-days", "14", "--horizon", "168",
                    "--models", "day_type,seasonal_mean", "--holidays", "IT", "--breaks", "12-23..01-06", "--json")  # fmt: skip
    assert code == 0, out
    models = {m["model"]: m for m in json.loads(out)["models"]}
    assert 0 < models["day_type"]["mase"] < 3 and 0 < models["day_type"]["coverage"] <= 1
    code, out = nmt("forecast", "backtest", "--input", str(DATA), "--holidays", "XX")
    assert code == 2 and "ISO 3166" in out and "\n" not in out.strip()
    code, out = nmt("forecast", "backtest", "--input", str(DATA), "--breaks", "12-23..01-32")
    assert code == 2 and "12-23..01-06" in out and "\n" not in out.strip()
    config = tmp_path / "nmt.toml"
    config.write_text('[forecast]\nbreaks = ["12-23"]\n')
    code, out = nmt("forecast", "backtest", "--input", str(DATA), "--config", str(config))
    assert code == 2 and "12-23..01-06" in out and "\n" not in out.strip()
