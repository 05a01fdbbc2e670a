from datetime import UTC, datetime

import orjson
import pytest

from collectors.decode import TelemetryDecoder

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
        (orjson.dumps({**GOOD, "value": "NaN"}), "finite"),
        (orjson.dumps({**GOOD, "value": "-inf"}), "finite"),
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
