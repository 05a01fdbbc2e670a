from pathlib import Path

import numpy as np
import pytest

from collectors.synthetic import SyntheticTelemetry
from collectors.tabular import TelemetryFileError, load_wide_frame


def test_wide_and_long_csv_load_to_the_same_frame(tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("timestamp,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,3,4\n")
    long = tmp_path / "long.csv"
    long.write_text("timestamp,series,value\n2024-01-01 00:00,a,1\n2024-01-01 00:00,b,2\n2024-01-01 01:00,a,3\n2024-01-01 01:00,b,4\n")
    a, b = load_wide_frame(wide), load_wide_frame(long)
    assert a.equals(b)
    assert str(a.index.tz) == "UTC"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("timestamp,a\n", "no data rows"),
        ("when,a\n1,2\n", "no time column"),
        ("timestamp,a\n2024-01-01 01:00,1\n2024-01-01 00:00,2\n", "not in increasing order"),
        ("timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:00,2\n", "appears twice"),
        ("timestamp,a\nnot-a-time,1\n", "not timestamps"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TelemetryFileError, match=message):
        load_wide_frame(path)


def test_synthetic_telemetry_is_seeded_and_has_its_structure() -> None:
    gen = SyntheticTelemetry(n_sources=30, periods=24 * 28, seed=3, missing_probability=0.05, burst_probability=0.0)
    frame = gen.frame()
    assert frame.equals(SyntheticTelemetry(n_sources=30, periods=24 * 28, seed=3, missing_probability=0.05, burst_probability=0.0).frame())
    assert not frame.equals(SyntheticTelemetry(n_sources=30, periods=24 * 28, seed=4).frame())
    assert 0.03 < frame.isna().mean().mean() < 0.07
    normalised = frame / frame.mean()
    by_hour = normalised.groupby(frame.index.hour).mean().mean(axis=1)
    assert by_hour.max() / by_hour.min() > 1.5  # daily cycle
    weekend = normalised[frame.index.day_of_week >= 5].mean().mean()
    weekday = normalised[frame.index.day_of_week < 5].mean().mean()
    assert weekend < 0.9 * weekday  # weekly cycle
    records = list(gen.records())
    assert len(records) == int(frame.notna().sum().sum())
    assert np.isclose(sum(r.value for r in records), np.nansum(frame.to_numpy()))
