import math

import numpy as np
import pytest

from collectors.windowing import TumblingWindows
from nm_toolkit.schemas import MAX_ABS_VALUE


def test_windows_aggregate_and_close_on_the_series_watermark() -> None:
    w = TumblingWindows(60)
    for ts, value in [(0, 1.0), (10, 5.0), (59.9, -2.0), (60, 7.0)]:
        assert w.add("a", "m", ts, value)
    closed = w.close_ready()
    assert [(p.count, p.sum, p.min, p.max) for p in closed] == [(3, 4.0, -2.0, 5.0)]
    assert w.open_windows == 1
    # another series in the same partition, far behind, is not late: watermarks are per series
    assert w.add("b", "m", 5, 1.0)
    assert w.close_ready() == []


def test_records_behind_the_watermark_are_late_unless_within_allowed_lateness() -> None:
    strict, lenient = TumblingWindows(60), TumblingWindows(60, allowed_lateness_seconds=30)
    for w in (strict, lenient):
        w.add("a", "m", 100, 1.0)  # window [60, 120)
        w.add("a", "m", 125, 1.0)  # watermark: 125 (strict), 95 (lenient)
    # strict: window [60, 120) ended before the watermark 125; lenient: watermark 95 < 120
    assert not strict.add("a", "m", 61, 2.0)
    assert lenient.add("a", "m", 61, 2.0)
    assert not lenient.add("a", "m", 59, 1.0)  # window [0, 60) ended before 95


def test_closed_windows_reject_stragglers_even_after_idle_close() -> None:
    w = TumblingWindows(60)
    w.add("a", "m", 10, 1.0)
    assert len(w.close_all()) == 1
    assert not w.add("a", "m", 20, 1.0)
    assert w.add("a", "m", 70, 1.0)


def test_snapshot_restore_continues_identically() -> None:
    events = [("a", "m", t * 7.0, float(t % 5)) for t in range(50)] + [("b", "m", t * 11.0, 1.0) for t in range(30)]
    reference, resumed = TumblingWindows(60, 5), TumblingWindows(60, 5)
    for e in events[:40]:
        reference.add(*e)
        resumed.add(*e)
    out_ref = reference.close_ready()
    out_res = resumed.close_ready()
    restored = TumblingWindows(60, 5)
    restored.restore(resumed.snapshot())
    for e in events[40:]:
        assert reference.add(*e) == restored.add(*e)
    assert out_ref == out_res
    assert reference.close_all() == restored.close_all()


def test_restore_refuses_a_checkpoint_of_another_window_size() -> None:
    w = TumblingWindows(60)
    w.add("a", "m", 1, 1.0)
    with pytest.raises(ValueError, match="60 s windows"):
        TumblingWindows(300).restore(w.snapshot())


def test_window_start_is_aligned_to_the_epoch() -> None:
    w = TumblingWindows(3600)
    assert w.window_start(7199.999) == 3600
    assert math.isinf(w.watermark("x", "y"))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e308, -MAX_ABS_VALUE * 2])
def test_values_that_could_make_a_window_non_finite_are_refused_and_change_nothing(value: float) -> None:
    w = TumblingWindows(60)
    with pytest.raises(ValueError, match="window sums could overflow"):
        w.add("a", "m", 10, value)
    with pytest.raises(ValueError, match="window sums could overflow"):
        w.add_columns(["a", "a"], ["m", "m"], np.array([10.0, 20.0]), np.array([1.0, value]))
    assert w.open_windows == 0 and math.isinf(w.watermark("a", "m"))


def test_windows_of_the_largest_values_stay_finite() -> None:
    w = TumblingWindows(60)
    for _ in range(1000):
        assert w.add("a", "m", 10, MAX_ABS_VALUE)
    late = w.add_columns(["b"] * 1000, ["m"] * 1000, np.full(1000, 10.0), np.full(1000, -MAX_ABS_VALUE))
    assert not late.any()
    for point in w.close_all():
        assert all(map(math.isfinite, (point.sum, point.min, point.max)))
        assert abs(point.sum) == pytest.approx(1000 * MAX_ABS_VALUE)
