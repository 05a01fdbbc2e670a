import numpy as np
import orjson
import pytest

from collectors.columnar import parse_columns
from collectors.decode import TelemetryDecoder
from collectors.gnmi import CounterRates
from collectors.publish import publish_records
from collectors.service import PartitionState
from collectors.synthetic import SyntheticTelemetry
from collectors.windowing import TumblingWindows
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.eventtime import EventTimeBounds


def windows_of(payloads: list[bytes], lateness: float = 0) -> tuple[list, int, int]:
    decoder, state = TelemetryDecoder(), PartitionState(TumblingWindows(3600, lateness), CounterRates())
    taken = late = 0
    for raw in payloads:
        decoded = decoder.decode(raw)
        assert decoded.errors == []
        n, late_records = state.ingest(decoded)
        taken, late = taken + n, late + len(late_records)
    return state.windows.close_all(), taken, late


@pytest.mark.parametrize("lateness", [0, 7200])
def test_columnar_and_row_batches_window_identically(lateness: float) -> None:
    telemetry = SyntheticTelemetry(n_sources=7, periods=24 * 3, step_seconds=900, seed=5)
    records = list(telemetry.records())
    rng = np.random.default_rng(0)
    shuffled = [records[i] for i in np.argsort(np.arange(len(records)) + rng.uniform(0, 40, len(records)))]
    payloads = {}
    for columnar in (False, True):
        bus = EmbeddedBus(default_partitions=1)
        publish_records(bus.producer(), "t", shuffled, batch_size=37, columnar=columnar)
        payloads[columnar] = [m.value for m in bus.messages("t")]
    rows, columns = windows_of(payloads[False], lateness), windows_of(payloads[True], lateness)
    assert rows[1:] == columns[1:]  # same records taken, same late count
    assert (rows[2] > 0) == (lateness == 0)
    assert len(rows[0]) == len(columns[0])
    for a, b in zip(rows[0], columns[0], strict=True):
        assert (a.series_id, a.window_start, a.count, a.min, a.max, a.location) == (b.series_id, b.window_start, b.count, b.min, b.max, b.location)
        assert a.sum == pytest.approx(b.sum)


def test_bad_rows_of_a_columnar_batch_are_reported_by_index() -> None:
    message = {
        "columns": {
            "ts": [1.7e9, "soon", 1.7e9, 5, 1.7e9],
            "source": ["a", "b", "", "d", ["e"]],
            "metric": ["m"] * 5,
            "value": [1.0, 2.0, 3.0, 4.0, None],
        },
        "unit": "MB",
    }
    out = TelemetryDecoder().decode(orjson.dumps(message))
    assert out.columns is not None and len(out.columns) == 1 and out.columns.source == ["a"]
    reasons = {e.index: e.reason for e in out.errors}
    assert set(reasons) == {1, 2, 3, 4}
    assert "not a finite number" in reasons[1] and "identifier" in reasons[2] and "plausible range" in reasons[3]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"columns": {"ts": [1.7e9], "source": ["a"], "metric": ["m"]}}, "must map each of"),
        ({"columns": {"ts": [1.7e9, 1.7e9], "source": ["a"], "metric": ["m"], "value": [1]}}, "different lengths"),
        ({"columns": {"ts": [], "source": [], "metric": [], "value": []}, "colour": 1}, "unknown fields"),
    ],
)
def test_malformed_columnar_batches_are_rejected_whole(message: dict, reason: str) -> None:
    out = TelemetryDecoder().decode(orjson.dumps(message))
    assert out.columns is None and reason in out.errors[0].reason


def columnar(**columns: list) -> bytes:
    base = {"ts": [1.7e9], "source": ["a"], "metric": ["m"], "value": [1.0]}
    return orjson.dumps({"columns": {**base, **columns}})


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"value": ["12.5"]}, "value: '12.5' is not a finite number"),
        ({"value": [True]}, "value: True is not a finite number"),
        ({"value": [False]}, "value: False is not a finite number"),
        ({"value": [1e300]}, "value: 1e+300 exceeds the magnitude bound 1e+30"),
        ({"value": [-1e31]}, "exceeds the magnitude bound"),
        ({"ts": ["yesterday"]}, "ts: 'yesterday' is not a finite number"),
        ({"ts": [True]}, "ts: 1970-01-01T00:00:01+00:00 is outside the plausible range"),
        ({"ts": [9_000_000_000.0]}, "2255-03-14T16:00:00+00:00 is outside the plausible range"),
        ({"ts": [1e300]}, "1e+300 (Unix seconds) is outside the plausible range"),
        ({"source": ["\U0010ffff" * 100_000]}, "is not an identifier"),
    ],
)
def test_columnar_values_are_as_strict_as_row_values(columns: dict, reason: str) -> None:
    out = TelemetryDecoder().decode(columnar(**columns))
    assert out.columns is not None and len(out.columns) == 0
    (error,) = out.errors
    assert error.index == 0 and reason in error.reason and len(error.reason) < 200


def test_strict_columns_keep_ints_and_report_only_the_bad_rows() -> None:
    out = TelemetryDecoder().decode(columnar(ts=[1.7e9] * 4, source=["a"] * 4, metric=["m"] * 4, value=[3, 2.5, "4", 1e40]))
    assert out.columns is not None and out.columns.value.tolist() == [3.0, 2.5]
    assert [e.index for e in out.errors] == [2, 3]
    # ints past the float range (which orjson never makes, but a Python caller might) are errors too
    batch, errors = parse_columns(
        {"columns": {"ts": [1.7e9] * 2, "source": ["a"] * 2, "metric": ["m"] * 2, "value": [10**400, 1]}},
        EventTimeBounds(),
    )
    assert batch.value.tolist() == [1.0] and "not a finite number" in errors[0]


@pytest.mark.parametrize(
    ("shared", "reason"),
    [({"location": {"lat": 123}}, "location.lat: Input should be less than or equal to 90"), ({"unit": 5}, "unit: Input should be a valid string")],
)
def test_a_bad_unit_or_location_rejects_the_batch_with_a_one_line_reason(shared: dict, reason: str) -> None:
    message = {"columns": {"ts": [1.7e9], "source": ["a"], "metric": ["m"], "value": [1.0]}, **shared}
    out = TelemetryDecoder().decode(orjson.dumps(message))
    assert out.columns is None and [e.reason for e in out.errors] == [reason]
