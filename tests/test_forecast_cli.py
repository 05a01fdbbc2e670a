"""``nmt forecast`` end to end on small files, the forecast store, and one-line errors for bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecasting.store import ForecastStore
from nm_toolkit.cli import app
from nm_toolkit.errors import UserError
from nm_toolkit.schemas import Forecast

DATA = Path(__file__).parent / "data" / "milan_4cells_21days.csv"
runner = CliRunner()


def nmt(*args: str) -> tuple[int, str]:
    """Run ``nmt`` as its console script does: a UserError is one line and exit code 2."""
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, UserError):  # what nm_toolkit.cli.main prints as one line, exit code 2
        return 2, f"error: {result.exception}"
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def five_minute_csv(path: Path, periods: int = 7 * 288 + 48, n_series: int = 3) -> Path:
    """A long CSV (timestamp, series, value) of 5-minute traffic with a daily cycle: 7 days and 4 hours."""
    index = pd.date_range("2024-03-01", periods=periods, freq="5min")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n_series):
        value = 100 * (i + 1) * (1 + 0.5 * np.sin(2 * np.pi * np.arange(len(index)) / 288)) + rng.normal(0, 5, len(index))
        frames.append(pd.DataFrame({"timestamp": index, "series": f"link-{i}", "value": value.round(2)}))
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_backtest_fixed_split_on_wide_file_json() -> None:
    code, out = nmt("forecast", "backtest", "--input", str(DATA), "--train-days", "14", "--horizon", "168",
                    "--models", "snaive_weekly,seasonal_mean,gbm", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["series"] == 4 and data["origins"] == 1 and data["step_seconds"] == 3600 and data["mase_season_steps"] == 24
    models = {m["model"]: m for m in data["models"]}
    assert list(models) == ["last_value", "snaive_weekly", "seasonal_mean", "gbm"]  # the baseline joins, first
    assert models["last_value"]["mae_vs_last_value"] == 1.0
    for row in models.values():
        assert 0 < row["mase"] < 3 and 0 <= row["coverage"] <= 1 and row["seconds_per_series"] > 0
        assert row["mae_vs_last_value"] == pytest.approx(row["mae"] / models["last_value"]["mae"], rel=1e-4)


def test_backtest_rolling_on_five_minute_long_file(tmp_path: Path) -> None:
    path = five_minute_csv(tmp_path / "links.csv")
    code, out = nmt("forecast", "backtest", "--input", str(path), "--train-days", "7", "--horizon", "12",
                    "--rolling", "--step", "12", "--models", "snaive_daily,gbm", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["step_seconds"] == 300 and data["mase_season_steps"] == 288
    assert data["origins"] == (48 - 12) // 12 + 1 and data["series"] == 3
    assert {m["model"] for m in data["models"]} == {"last_value", "snaive_daily", "gbm"}
    code, out = nmt("forecast", "backtest", "--input", str(path), "--train-days", "7", "--horizon", "12", "--rolling", "--models", "snaive_daily")
    assert code == 0 and "backtest: 3 series, 4 origin(s)" in out and "snaive" in out  # the human table (80 columns wrap names)


def test_predict_show_plot_list_round_trip(tmp_path: Path) -> None:
    code, out = nmt("forecast", "predict", "--input", str(DATA), "--model", "seasonal_mean", "--horizon", "24",
                    "--at", "2013-11-20T00:00", "--json")
    assert code == 0, out
    assert len(json.loads(out)["forecasts"]) == 4
    code, out = nmt("forecast", "show", "--series", "1001", "--horizon", "6", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["model"] == "seasonal_mean" and len(shown["steps"]) == 6
    assert shown["steps"][0]["time"].startswith("2013-11-20T00:00")
    assert all(s["actual"] is not None and s["lower"] <= s["mean"] <= s["upper"] for s in shown["steps"])
    code, out = nmt("forecast", "show", "--series", "1001", "--at", "2013-11-19")
    assert code == 2 and "no forecast for series '1001' issued at or before" in out
    code, out = nmt("forecast", "list", "--json")
    listed = json.loads(out)["series"]
    assert [r["series_id"] for r in listed] == ["10", "10000", "1001", "1003"] and listed[0]["history_points"] == 504
    png = tmp_path / "out.png"
    code, out = nmt("forecast", "plot", "--series", "1001", "-o", str(png))
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("", (), "is empty"),
        ("timestamp,a\n2024-01-01 01:00,1\n2024-01-01 00:00,2\n2024-01-01 02:00,3\n", (), "not in increasing order"),
        ("timestamp,a,b\n2024-01-01 00:00,1,\n2024-01-01 01:00,2,\n2024-01-01 02:00,3,\n", (), "series b have no numeric values"),
        ("timestamp,a\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n", ("--series", "zz"), "no series named zz: choose from a"),
        ("timestamp,a\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:00,3\n", ("--models", "prophet"), "unknown model prophet"),
        ("timestamp,a\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:00,3\n", ("--train-days", "5"), "leaves nothing to score"),
    ],
    ids=["empty", "non-monotonic", "all-nan", "unknown-column", "unknown-model", "too-short"],
)
def test_bad_inputs_give_one_line_errors(tmp_path: Path, content: str, args: tuple[str, ...], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out = nmt("forecast", "backtest", "--input", str(path), "--horizon", "1", *args)
    assert code == 2 and message in out and "Traceback" not in out


def test_store_round_trip_latest_and_retention(tmp_path: Path) -> None:
    now = datetime(2024, 1, 10, tzinfo=UTC)
    with ForecastStore(tmp_path / "f.sqlite") as store:
        made = [
            Forecast(series_id="a|x", model="gbm", issued_at=now - timedelta(days=d), step_seconds=3600,
                     start=now - timedelta(days=d) + timedelta(hours=1), mean=[1.0, 2.5], lower=[0.5, 2.0], upper=[1.5, 3.0],
                     level=0.8, note=f"d{d}")
            for d in (0, 2, 40)
        ]
        store.put_forecasts(made)
        assert store.latest("a|x") == made[0]
        assert store.latest("a|x", at=now - timedelta(days=1)) == made[1]
        assert store.latest("b|x") is None
        store.put_points([("a|x", now + timedelta(hours=h), 3600, float(h)) for h in (0, 1, 3)])
        store.put_points([("a|x", now + timedelta(hours=1), 3600, 10.0)])  # a re-emitted window replaces the first copy
        history = store.history("a|x")
        assert history.tolist()[:2] == [0.0, 10.0] and np.isnan(history.iloc[2]) and len(history) == 4
        assert store.prune(now, timedelta(days=30), max_points=2) == {"forecasts": 1, "points": 1}
        assert store.summary()[0]["forecasts"] == 2 and store.history("a|x").index[0] == pd.Timestamp(now + timedelta(hours=1))
