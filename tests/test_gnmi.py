import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from collectors.decode import TelemetryDecoder
from collectors.gnmi import (
    CounterRates,
    CounterSample,
    counter_delta,
    notification_samples,
)
from nm_toolkit.eventtime import EventTimeBounds

T0 = 1_700_000_000  # readings are offsets from here, a plausible time
NOW = datetime(2024, 1, 1, tzinfo=UTC)
BOUNDS = EventTimeBounds()


def samples(obj: dict[str, Any]) -> list[CounterSample]:
    """The samples of a notification that must have no bad updates."""
    found, errors = notification_samples(obj, BOUNDS, NOW)
    assert errors == {}
    return found


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
            "timestamp": str(int((T0 + ts_s) * 10**9)),
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
    (sample,) = samples(notification(10, 1000, string_path=string_path))
    assert (sample.target, sample.interface, sample.counter, sample.ts, sample.value) == ("r1", "eth0", "in-octets", T0 + 10, 1000)


def test_rates_from_successive_samples_including_a_wrap_and_a_reset() -> None:
    rates = CounterRates()
    readings = [(0, 2**64 - 1000), (10, 1000), (20, 51000), (30, 500)]
    out = [rates.update(s) for t, v in readings for s in samples(notification(t, v))]
    assert out[0] is None  # first reading: no rate yet
    assert [r.value for r in out[1:]] == [200.0, 5000.0, 50.0]
    assert out[1].source == "r1/eth0" and out[1].metric == "in_octets_per_s" and out[1].unit == "B/s"
    assert (rates.wraps, rates.resets) == (1, 1)
    restored = CounterRates()
    restored.restore(rates.snapshot())
    (nxt,) = samples(notification(40, 1500))
    assert restored.update(nxt).value == 100.0


def test_decoder_routes_notifications_to_counters_and_rejects_broken_ones() -> None:
    decoder = TelemetryDecoder()
    out = decoder.decode(orjson.dumps(notification(0, 5)))
    assert len(out.counters) == 1 and out.records == [] and out.errors == []
    broken = notification(0, 5)
    del broken["update"]["prefix"]
    assert "names no device" in decoder.decode(orjson.dumps(broken)).errors[0].reason


COUNTER = "interfaces/interface[name=eth0]/state/counters/in-octets"


def update(val: Any, path: Any = COUNTER) -> dict[str, Any]:
    return {"path": path, "val": val}


def with_updates(*updates: Any, **fields: Any) -> dict[str, Any]:
    inner = {"timestamp": str(T0 * 10**9), "prefix": {"target": "r1"}, "update": list(updates), **fields}
    return {"update": inner}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("interfaces", "is not an object with 'path' and 'val'"),
        (update(None), "gNMI value None is not an integer counter"),
        (update({"jsonVal": {"a": 1}}), "is not an integer counter"),
        (update({"uintVal": 1.5}), "is not an integer counter"),
        (update({"uintVal": True}), "is not an integer counter"),
        (update({"uintVal": "9" * 5000}), "is not an integer counter"),
        (update({"intVal": "-1"}), "outside [0, 2**64)"),
        (update({"uintVal": str(2**64)}), "outside [0, 2**64)"),
        (update({"stringVal": "up"}), "is not an integer counter"),
        (update(1, {"elem": [{"name": "interfaces"}, {"key": {"name": "eth0"}}]}), "has no name"),
        (update(1, {"elem": "interfaces"}), "'elem' must be a list"),
        (update(1, {"elem": [1]}), "is not an object"),
        (update(1, {"elem": [{"name": "interface", "key": "eth0"}]}), "expected a map of strings"),
        (update(1, 5), "unsupported gNMI path 5"),
        (update(1, "interfaces/interface/state/counters/in-octets"), "has no [name=...] key"),
        (update(1, COUNTER.replace("eth0", "e" * 300)), "not an identifier"),
    ],
)
def test_a_malformed_update_is_an_error_of_its_index_and_the_others_stay(bad: Any, reason: str) -> None:
    found, errors = notification_samples(with_updates(update({"uintVal": "7"}), bad), BOUNDS, NOW)
    assert [(s.interface, s.value) for s in found] == [("eth0", 7)]
    assert list(errors) == [1] and reason in errors[1] and len(errors[1]) < 200


@pytest.mark.parametrize(
    ("notification_fields", "reason"),
    [
        ({"update": {"path": COUNTER}}, "'update' must be a list"),
        ({"update": "x"}, "'update' must be a list"),
        ({"prefix": [1]}, "prefix [1] is not a path"),
        ({"prefix": 5}, "prefix 5 is not a path"),
        ({"prefix": {"target": {"a": 1}}}, "is not an identifier"),
        ({"prefix": {"elem": []}}, "names no device"),
        ({"timestamp": {"seconds": 1}}, "integer 'timestamp'"),
        ({"timestamp": True}, "integer 'timestamp'"),
        ({"timestamp": 1.7e18}, "integer 'timestamp'"),
        ({"timestamp": 1e300}, "integer 'timestamp'"),
        ({"timestamp": "9" * 5000}, "integer 'timestamp'"),
        ({"timestamp": str(2**63)}, "outside int64"),
        ({"timestamp": -1}, "outside int64"),
        ({"timestamp": str(8_993_721_600 * 10**9)}, "2255-01-01T00:00:00+00:00 is outside the plausible range"),
        ({"timestamp": 10**9}, "1970-01-01T00:00:01+00:00 is outside the plausible range"),
    ],
)
def test_a_malformed_notification_is_one_error_never_an_exception(notification_fields: dict, reason: str) -> None:
    message = with_updates(update({"uintVal": "7"}))
    message["update"].update(notification_fields)
    with pytest.raises(ValueError) as info:
        notification_samples(message, BOUNDS, NOW)
    assert reason in str(info.value)
    out = TelemetryDecoder().decode(orjson.dumps(message), now=NOW)
    assert out.counters == [] and [(e.index, reason in e.reason) for e in out.errors] == [(None, True)]


def test_the_decoder_reports_bad_updates_by_index_and_keeps_the_good_ones() -> None:
    message = with_updates(update({"uintVal": "7"}), "junk", update(None))
    out = TelemetryDecoder().decode(orjson.dumps(message), now=NOW)
    assert [s.value for s in out.counters] == [7]
    assert [e.index for e in out.errors] == [1, 2]


def test_counter_samples_name_the_series_their_rates_become() -> None:
    sample = CounterSample("r1", "eth0", "out-octets", T0, 1)
    assert (sample.source, sample.metric) == ("r1/eth0", "out_octets_per_s")


def test_the_fastest_possible_rate_is_still_a_valid_record() -> None:
    """A full 64-bit delta over the smallest step a float timestamp resolves stays under the value
    bound, so building the rate record cannot fail."""
    rates = CounterRates()
    first = CounterSample("r1", "eth0", "in-octets", float(T0), 0)
    assert rates.update(first) is None
    record = rates.update(CounterSample("r1", "eth0", "in-octets", float(T0) + 2.4e-7, 2**64 - 1))
    assert record is not None and record.value > 1e25


# -- gnmic's Kafka output: its `json` and `event` formats -----------------------------------------
# Built as gnmic's formatters build them (pkg/formatters: json.go formatSubscribeResponse, event.go
# ResponseToEventMsgs): xpaths with a leading "/", keys as [k=v] in `json`'s prefix and Path and as
# "<element>_<key>" tags in `event`, values already decoded (uint64 as JSON numbers, JSON_IETF
# uint64 as strings), the device's name in `source` (and `target` where the prefix had one).


def gnmic_json(ts_s: float, octets: Any, *, prefix: bool = True, target: str | None = None) -> dict[str, Any]:
    ts = int((T0 + ts_s) * 10**9)
    msg: dict[str, Any] = {
        "source": "r1:57400",
        "subscription-name": "port-stats",
        "timestamp": ts,
        "time": datetime.fromtimestamp(ts / 1e9, UTC).isoformat(),
    }
    if prefix:
        msg["prefix"] = "/interfaces/interface[name=eth0]/state/counters"
        msg["updates"] = [{"Path": "/in-octets", "values": {"in-octets": octets}}]
    else:
        msg["updates"] = [
            {
                "Path": "/interfaces/interface[name=eth0]/state/counters/in-octets",
                "values": {"interfaces/interface/state/counters/in-octets": octets},
            }
        ]
    if target is not None:
        msg["target"] = target
    return msg


def gnmic_event(ts_s: float, octets: Any, *, interface: str = "eth0", **tags: str) -> dict[str, Any]:
    return {
        "name": "port-stats",
        "timestamp": int((T0 + ts_s) * 10**9),
        "tags": {"interface_name": interface, "source": "r1:57400", "subscription-name": "port-stats", **tags},
        "values": {"/interfaces/interface/state/counters/in-octets": octets},
    }


def decoded(message: Any) -> tuple[list[tuple[str, str, str, float, int]], list[tuple[int | None, str]]]:
    out = TelemetryDecoder().decode(orjson.dumps(message), now=NOW)
    assert out.records == []
    return [(s.target, s.interface, s.counter, s.ts, s.value) for s in out.counters], [(e.index, e.reason) for e in out.errors]


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("octets", [1000, "1000"])
def test_gnmic_json_messages_become_counter_samples(prefix: bool, octets: Any) -> None:
    assert decoded(gnmic_json(10, octets, prefix=prefix)) == ([("r1:57400", "eth0", "in-octets", T0 + 10, 1000)], [])
    assert decoded(gnmic_json(10, octets, prefix=prefix, target="r1"))[0][0][0] == "r1"  # the prefix's target wins


def test_gnmic_json_container_values_count_each_counter_below_them() -> None:
    message = gnmic_json(0, 0)
    message["prefix"] = "/interfaces/interface[name=eth1]/state"
    message["updates"] = [{"Path": "/counters", "values": {"counters": {"in-octets": "7", "openconfig-if:out-octets": 9, "in-pkts": [1]}}}]
    samples, errors = decoded(message)
    assert errors == [] and sorted((s[1], s[2], s[4]) for s in samples) == [("eth1", "in-octets", 7), ("eth1", "out-octets", 9)]


def test_gnmic_event_messages_as_a_list_or_split_become_counter_samples() -> None:
    events = [gnmic_event(10, 1000), gnmic_event(10, 5, interface="eth1")]
    want = [("r1:57400", "eth0", "in-octets", T0 + 10, 1000), ("r1:57400", "eth1", "in-octets", T0 + 10, 5)]
    assert decoded(events) == (want, [])
    assert decoded(events[1]) == (want[1:], [])  # split-events: one event per message
    assert decoded(gnmic_event(10, "1000", target="r1"))[0][0][0] == "r1"


def test_sync_responses_and_deletes_carry_no_reading_and_no_error() -> None:
    delete = {"name": "port-stats", "timestamp": T0 * 10**9, "tags": {"source": "r1:57400"}, "deletes": ["/interfaces/interface[name=eth0]"]}
    for message in ({"sync-response": True}, {"syncResponse": True}, delete, [delete]):
        assert decoded(message) == ([], [])


def test_a_bad_gnmic_event_is_an_error_of_its_index_and_the_others_stay() -> None:
    events = [gnmic_event(10, 1000), gnmic_event(10, -5), gnmic_event(10, 3, source=""), {**gnmic_event(10, 1), "timestamp": 5}]
    samples, errors = decoded(events)
    assert [s[4] for s in samples] == [1000]
    assert [i for i, _ in errors] == [1, 2, 3]
    assert "outside [0, 2**64)" in errors[0][1] and "names no device" in errors[1][1] and "plausible range" in errors[2][1]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({**gnmic_json(0, 1), "updates": "x"}, "'updates' must be a list"),
        ({**gnmic_json(0, 1), "timestamp": "soon"}, "integer 'timestamp'"),
        ({**gnmic_json(0, 1), "prefix": 5}, "gnmic prefix 5 is not a path"),
        ({**gnmic_json(0, 1), "source": None}, "names no device"),
    ],
)
def test_a_malformed_gnmic_json_message_is_one_error(message: dict, reason: str) -> None:
    samples, errors = decoded(message)
    assert samples == [] and len(errors) == 1 and reason in errors[0][1]


def test_a_malformed_gnmic_json_update_is_an_error_of_its_index() -> None:
    message = gnmic_json(0, 1)
    message["updates"] += [{"Path": 5, "values": {}}, "junk", {"Path": "/in-octets", "values": {"in-octets": "up"}}]
    samples, errors = decoded(message)
    assert [s[4] for s in samples] == [1] and [i for i, _ in errors] == [1, 2, 3]


def test_gnmic_and_protobuf_json_give_the_same_rates() -> None:
    readings = [(0, 2**64 - 1000), (10, 1000), (20, 51000), (30, 500)]
    forms = {
        "protojson": [notification(t, v) for t, v in readings],
        "json": [gnmic_json(t, v, target="r1") for t, v in readings],
        "event": [[gnmic_event(t, v, target="r1")] for t, v in readings],
    }
    rates = {}
    for form, messages in forms.items():
        counter_rates = CounterRates()
        out = [counter_rates.update(s) for m in messages for s in TelemetryDecoder().decode(orjson.dumps(m), now=NOW).counters]
        rates[form] = [(r.source, r.metric, r.value) for r in out if r is not None]
    assert rates["protojson"] == rates["json"] == rates["event"] == [
        ("r1/eth0", "in_octets_per_s", v) for v in (200.0, 5000.0, 50.0)
    ]


def test_json_encoded_values_in_protobuf_json_are_base64_of_json() -> None:
    state = b'{"name": "eth0", "oper-status": "UP", "counters": {"in-octets": "12", "openconfig-interfaces:out-octets": 34}}'
    container = base64.b64encode(state).decode()
    leaf = base64.b64encode(b'"56"').decode()
    message = with_updates(
        {"path": "interfaces/interface[name=eth0]/state", "val": {"jsonIetfVal": container}},
        {"path": "interfaces/interface[name=eth1]/state/counters/in-octets", "val": {"jsonVal": leaf}},
        {"path": "interfaces/interface[name=eth1]/state/oper-status", "val": {"stringVal": "UP"}},
    )
    found, errors = notification_samples(message, BOUNDS, NOW)
    assert errors == {}
    assert sorted((s.interface, s.counter, s.value) for s in found) == [("eth0", "in-octets", 12), ("eth0", "out-octets", 34), ("eth1", "in-octets", 56)]


def test_subinterface_counters_are_series_of_their_own() -> None:
    sub = "interfaces/interface[name=eth0]/subinterfaces/subinterface[index=10]/state/counters/in-octets"
    found, errors = notification_samples(with_updates(update({"uintVal": "7"}), update({"uintVal": "9"}, sub)), BOUNDS, NOW)
    assert errors == {} and [(s.source, s.value) for s in found] == [("r1/eth0", 7), ("r1/eth0.10", 9)]
    event = gnmic_event(0, 3, subinterface_index="10")
    event["values"] = {"/interfaces/interface/subinterfaces/subinterface/state/counters/in-octets": 3}
    assert decoded(event)[0][0][1] == "eth0.10"
