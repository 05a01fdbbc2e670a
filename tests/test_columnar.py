import numpy as np
import orjson
import pytest

from collectors.decode import TelemetryDecoder
from collectors.gnmi import CounterRates
from collectors.publish import publish_records
from collectors.service import PartitionState
from collectors.synthetic import SyntheticTelemetry
from collectors.windowing import TumblingWindows
from nm_toolkit.bus import EmbeddedBus


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
