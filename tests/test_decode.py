import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import ValidationError

from collectors.decode import TelemetryDecoder
from nm_toolkit.eventtime import EventTimeBounds
from nm_toolkit.schemas import MAX_ABS_VALUE, PromptMessage, SeriesPoint, TelemetryRecord
from tests.poison import GOOD_POINT, POISON_TELEMETRY

GOOD = {"ts": "2024-01-01T00:00:00Z", "source": "cell-1", "metric": "traffic", "value": 1.5}
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def decode(raw: bytes, **kw: object):
    return TelemetryDecoder(**kw).decode(raw, now=NOW)  # type: ignore[arg-type]


def test_single_batch_array_and_json_lines_all_decode() -> None:
    assert len(decode(orjson.dumps(GOOD)).records) == 1
    assert len(decode(orjson.dumps({"records": [GOOD, GOOD]})).records) == 2
    assert len(decode(orjson.dumps([GOOD] * 3)).records) == 3
    lines = b"\n".join(orjson.dumps(GOOD) for _ in range(4))
    assert len(decode(lines).records) == 4


def test_epoch_timestamps_and_locations_are_normalised_to_utc() -> None:
    record = decode(orjson.dumps({**GOOD, "ts": 1704067200, "location": {"cell": "c1", "lat": 45.4, "lon": 9.2}})).records[0]
    assert record.ts == datetime(2024, 1, 1, tzinfo=UTC)
    assert record.location is not None and record.location.cell == "c1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1, "source": ', "invalid JSON"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "metric"}), "metric: Field required"),
        (orjson.dumps({**GOOD, "value": "lots"}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": "NaN"}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": "-inf"}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": "12.5"}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": True}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": False}), "value: Input should be a valid number"),
        (orjson.dumps({**GOOD, "value": 1e300}), "value: magnitude exceeds 1e+30"),
        (orjson.dumps({**GOOD, "value": -1e31}), "value: magnitude exceeds 1e+30"),
        (orjson.dumps({**GOOD, "ts": "0001-01-01T00:00:00+05:00"}), "outside the representable range"),
        (orjson.dumps({**GOOD, "ts": "9999-12-31T23:59:59-05:00"}), "outside the representable range"),
        (orjson.dumps({**GOOD, "ts": "9999-12-31T23:59:59Z"}), "plausible range"),
        (orjson.dumps({**GOOD, "ts": 1e300}), "ts: Input should be a valid datetime"),
        (b"", "empty message"),
        (b"\n\n  \n", "empty message"),
        (b"  \t ", "empty message"),
        (b"[" * 100_000 + b"]" * 100_000, "depth limit exceeded"),
        (b"null", "got null"),
        (orjson.dumps({**GOOD, "ts": 12}), "plausible range"),
        (orjson.dumps({**GOOD, "ts": "2099-01-01T00:00:00Z"}), "plausible range"),
        (orjson.dumps({**GOOD, "source": ""}), "source"),
        (orjson.dumps({**GOOD, "extra": 1}), "extra: Extra inputs are not permitted"),
        (orjson.dumps({**GOOD, "location": {"lat": 123}}), "location.lat"),
        (b'"just a string"', "expected a JSON object or array"),
        (orjson.dumps({"records": {"a": 1}}), "'records' must be a list"),
    ],
)
def test_bad_records_come_back_with_a_reason(payload: bytes, reason: str) -> None:
    out = decode(payload)
    assert out.records == []
    assert len(out.errors) == 1
    assert reason in out.errors[0].reason


def test_one_bad_record_in_a_batch_does_not_sink_the_others() -> None:
    batch = [GOOD, {**GOOD, "value": None}, GOOD, {**GOOD, "ts": "yesterday"}]
    out = decode(orjson.dumps({"records": batch}))
    assert len(out.records) == 2
    assert [e.index for e in out.errors] == [1, 3]


def test_oversized_messages_are_rejected_before_parsing() -> None:
    out = decode(orjson.dumps({"records": [GOOD] * 100}), max_message_bytes=1000)
    assert out.records == []
    assert "exceeds the 1000-byte limit" in out.errors[0].reason


def test_ints_are_values_and_bounded_values_are_kept() -> None:
    out = decode(orjson.dumps([{**GOOD, "value": 7}, {**GOOD, "value": -MAX_ABS_VALUE}, {**GOOD, "value": MAX_ABS_VALUE}]))
    assert [r.value for r in out.records] == [7.0, -MAX_ABS_VALUE, MAX_ABS_VALUE] and out.errors == []


def test_a_kafka_null_value_is_an_empty_message() -> None:
    (error,) = TelemetryDecoder().decode(None).errors  # type: ignore[arg-type]
    assert error.reason.startswith("empty message")


def test_reasons_quote_bad_input_briefly_on_one_line() -> None:
    key = "\U0010ffff" * 200_000 + "\n"
    (error,) = decode(orjson.dumps({**GOOD, key: 1})).errors
    assert "Extra inputs are not permitted" in error.reason
    assert len(error.reason) < 200 and "\n" not in error.reason


@pytest.mark.parametrize(("name", "raw"), POISON_TELEMETRY, ids=[name for name, _ in POISON_TELEMETRY])
def test_poison_is_rejected_with_a_reason_never_raised_or_accepted(name: str, raw: bytes | None) -> None:
    out = TelemetryDecoder().decode(b"" if raw is None else raw)
    assert out.errors and all(e.reason.strip() and "\n" not in e.reason for e in out.errors), out.errors
    assert out.records == [] and out.counters == []
    assert out.columns is None or len(out.columns) == 0


# -- the plausible event time rule ---------------------------------------------------------------


def test_event_time_bounds_name_what_is_implausible() -> None:
    bounds = EventTimeBounds.from_settings("2000-01-01T00:00:00", 3600)  # naive: UTC
    assert bounds.min_timestamp == datetime(2000, 1, 1, tzinfo=UTC)
    assert bounds.reason(NOW, now=NOW) is None
    assert bounds.reason(NOW.timestamp() + 3600, now=NOW) is None
    assert "plausible range" in str(bounds.reason(NOW + timedelta(seconds=3601), now=NOW))
    assert "1999-12-31T23:59:59+00:00" in str(bounds.reason(datetime(1999, 12, 31, 23, 59, 59), now=NOW))
    for extreme in (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC), 1e300, -1e300, math.nan, math.inf):
        assert "outside the plausible range" in str(bounds.reason(extreme, now=NOW))
    assert bounds.limits(NOW) == (datetime(2000, 1, 1, tzinfo=UTC).timestamp(), NOW.timestamp() + 3600)
    with pytest.raises(ValueError, match="max_future_seconds"):
        EventTimeBounds(max_future_seconds=math.inf)


# -- schemas at the edge ---------------------------------------------------------------------------


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_timestamps_without_a_utc_equivalent_are_validation_errors(ts: str) -> None:
    for model, data in ((TelemetryRecord, {**GOOD, "ts": ts}), (SeriesPoint, {**GOOD_POINT, "window_start": ts})):
        with pytest.raises(ValidationError, match="representable range"):
            model.model_validate(data)
    with pytest.raises(ValidationError, match="representable range"):
        PromptMessage.model_validate({"request_id": "r", "text": "t", "location": "c", "ts": ts})
    # the extremes that do have one are fine, and their epoch seconds are finite
    assert TelemetryRecord.model_validate({**GOOD, "ts": "0001-01-01T00:00:00-05:00"}).ts.timestamp() < 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sum": math.nan}, "sum"),
        ({"min": -math.inf}, "min"),
        ({"max": math.inf}, "max"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
    ],
)
def test_series_points_must_be_finite_and_non_empty(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SeriesPoint.model_validate({**GOOD_POINT, **change})
    assert info.value.errors()[0]["loc"] == (field,)
    assert SeriesPoint.model_validate(GOOD_POINT).mean == 1.0
