import orjson
import pytest

from collectors.decode import TelemetryDecoder
from collectors.gnmi import CounterRates, counter_delta, notification_samples


def notification(ts_s: float, octets: int, *, string_path: bool = False, target: str = "r1") -> dict:
    path: object
    if string_path:
        path = "interfaces/interface[name=eth0]/state/counters/in-octets"
    else:
        path = {
            "elem": [
                {"name": "interfaces"},
                {"name": "interface", "key": {"name": "eth0"}},
                {"name": "state"},
                {"name": "counters"},
                {"name": "in-octets"},
            ]
        }
    return {
        "update": {
            "timestamp": str(int(ts_s * 1e9)),
            "prefix": {"target": target},
            "update": [
                {"path": path, "val": {"uintVal": str(octets)}},
                {"path": "system/state/hostname", "val": {"stringVal": "r1"}},
            ],
        }
    }


def test_counter_delta_tells_growth_wrap_and_reset_apart() -> None:
    assert counter_delta(100, 250) == (150, "ok")
    assert counter_delta(2**32 - 10, 5) == (15, "wrap")
    assert counter_delta(2**64 - 10, 5) == (15, "wrap")
    assert counter_delta(10**12, 400) == (400, "reset")


@pytest.mark.parametrize("string_path", [False, True])
def test_notifications_become_interface_counter_samples(string_path: bool) -> None:
    (sample,) = notification_samples(notification(10, 1000, string_path=string_path))
    assert (sample.target, sample.interface, sample.counter, sample.ts, sample.value) == ("r1", "eth0", "in-octets", 10, 1000)


def test_rates_from_successive_samples_including_a_wrap_and_a_reset() -> None:
    rates = CounterRates()
    readings = [(0, 2**64 - 1000), (10, 1000), (20, 51000), (30, 500)]
    out = [rates.update(s) for t, v in readings for s in notification_samples(notification(t, v))]
    assert out[0] is None  # first reading: no rate yet
    assert [r.value for r in out[1:]] == [200.0, 5000.0, 50.0]
    assert out[1].source == "r1/eth0" and out[1].metric == "in_octets_per_s" and out[1].unit == "B/s"
    assert (rates.wraps, rates.resets) == (1, 1)
    restored = CounterRates()
    restored.restore(rates.snapshot())
    (nxt,) = notification_samples(notification(40, 1500))
    assert restored.update(nxt).value == 100.0


def test_decoder_routes_notifications_to_counters_and_rejects_broken_ones() -> None:
    decoder = TelemetryDecoder()
    out = decoder.decode(orjson.dumps(notification(1_700_000_000, 5)))
    assert len(out.counters) == 1 and out.records == [] and out.errors == []
    broken = notification(1_700_000_000, 5)
    del broken["update"]["prefix"]
    assert "names no device" in decoder.decode(orjson.dumps(broken)).errors[0].reason
