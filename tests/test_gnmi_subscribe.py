"""`nmt collect gnmi` against openconfig's own fake gNMI target, checked against its `gnmi_cli`, and
the whole path on the real broker: fake target -> subscriber -> Kafka -> collector -> exact windows,
through counter wraps, a device that goes away and one that comes back rebooted. gnmic's Kafka
output (its `json` and `event` formats) takes the same path from the broker on.

The fake target and `gnmi_cli` are built with Go from the Go module proxy on first use and cached
(nm_toolkit.devtools.gnmi_fake); without Go those tests are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from google.protobuf import text_format
from google.protobuf.json_format import MessageToDict
from pygnmi.spec.v080 import gnmi_pb2

from collectors.gnmi_subscribe import (
    GnmiSubscriber,
    backoff_delay,
    gnmi_path,
    notification_message,
    run_subscribers,
    subscribe_request,
)
from collectors.service import telemetry_collector
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import GnmiSettings, GnmiTargetSettings, Settings
from nm_toolkit.devtools.gnmi_fake import (
    FakeGnmiTarget,
    counter_notifications,
    ensure_gnmi_tools,
    gnmi_home,
    go_binary,
)
from nm_toolkit.devtools.kafka import free_port
from tests.kafka_helpers import (
    expected_windows,
    kafka_settings,
    read_all,
    windows_frame,
)

T0 = 1_700_000_000
NS = 10**9
WINDOW = 60


@pytest.fixture(scope="session")
def gnmi_tools() -> Path:
    """The fake target and gnmi_cli, built once per machine (about two minutes on two cores)."""
    if go_binary() is None and not (gnmi_home() / "bin" / "fake_server").is_file():
        pytest.skip("Go is not installed: the fake gNMI target (github.com/openconfig/gnmi) is built with `go install`")
    return ensure_gnmi_tools()


def target_settings(fake: FakeGnmiTarget, **fields: object) -> GnmiTargetSettings:
    return GnmiTargetSettings(name=fake.target, address=fake.address, ca_cert=fake.ca_cert, **fields)


# -- the request, the messages, the back-off -------------------------------------------------------


@pytest.mark.parametrize(("mode", "interval_ns"), [("sample", 5 * NS), ("on_change", 0)])
def test_the_request_streams_sample_or_on_change_subscriptions_prefixed_with_the_target(mode: str, interval_ns: int) -> None:
    target = GnmiTargetSettings(
        name="r1", address="127.0.0.1:1", mode=mode, sample_interval_seconds=5,
        paths=["/interfaces/interface[name=eth0]/state/counters", "/interfaces/interface/state/oper-status"],
    )  # fmt: skip
    request = subscribe_request(target, "json_ietf")
    subscription_list = request.subscribe
    assert subscription_list.mode == gnmi_pb2.SubscriptionList.STREAM
    assert subscription_list.prefix.target == "r1" and subscription_list.encoding == gnmi_pb2.JSON_IETF
    first, second = subscription_list.subscription
    assert first.mode == second.mode == {"sample": gnmi_pb2.SAMPLE, "on_change": gnmi_pb2.ON_CHANGE}[mode]
    assert first.sample_interval == interval_ns
    assert [(e.name, dict(e.key)) for e in first.path.elem] == [
        ("interfaces", {}), ("interface", {"name": "eth0"}), ("state", {}), ("counters", {}),
    ]  # fmt: skip
    assert [e.name for e in second.path.elem][-1] == "oper-status" and not second.path.elem[1].key


def test_paths_with_several_keys() -> None:
    path = gnmi_path("network-instances/network-instance[name=default]/protocols/protocol[identifier=BGP][name=bgp]")
    assert dict(path.elem[3].key) == {"identifier": "BGP", "name": "bgp"}


def test_a_notification_is_published_as_protobuf_json_naming_its_device() -> None:
    (response,) = counter_notifications([(T0 * NS, {"eth0": {"in-octets": 2**64 - 1}})])
    message = orjson.loads(notification_message(response, "r1") or b"")
    assert message["update"]["prefix"]["target"] == "r1"
    assert message["update"]["update"][0]["val"] == {"uintVal": str(2**64 - 1)}
    assert response.update.prefix.target == ""  # the device's response is left as it came
    response.update.prefix.target = "r1-re0"
    assert orjson.loads(notification_message(response, "r1") or b"")["update"]["prefix"]["target"] == "r1-re0"
    assert notification_message(gnmi_pb2.SubscribeResponse(sync_response=True), "r1") is None


def test_the_back_off_doubles_up_to_its_cap_with_jitter() -> None:
    assert [backoff_delay(n, 1.0, 60.0, 0.999999) for n in (1, 2, 3, 6, 7, 100, 10**6)] == pytest.approx(
        [1, 2, 4, 32, 60, 60, 60], rel=1e-5
    )
    assert backoff_delay(3, 1.0, 60.0, 0.0) == 2.0  # jitter takes at most half of the wait off


def test_an_unreachable_target_is_retried_with_back_off_then_given_up() -> None:
    port = free_port()  # nothing listens there
    target = GnmiTargetSettings(name="gone", address=f"127.0.0.1:{port}", insecure=True)
    settings = GnmiSettings(targets=[target], retry_initial_seconds=0.01, retry_max_seconds=0.05, max_retries=3)
    bus = EmbeddedBus(1)
    subscriber = GnmiSubscriber(target, settings, bus.producer(), "telemetry", seed=1)
    run_subscribers([subscriber], threading.Event(), max_seconds=120)
    stats = subscriber.stats
    assert stats.given_up and stats.stream_failures == 4 and stats.published == 0
    assert stats.last_error.startswith("UNAVAILABLE")


# -- against openconfig's fake target --------------------------------------------------------------


def readings(
    start: int, count: int, increments: dict[tuple[str, str], np.ndarray], base: dict[tuple[str, str], int], modulo: dict[str, int]
) -> list[tuple[int, dict[str, dict[str, int]]]]:
    """``count`` readings every 10 s from reading ``start``: cumulative counters from ``base`` that
    grew by ``increments``, wrapping at each interface's counter width."""
    out = []
    for i in range(start, start + count):
        interfaces: dict[str, dict[str, int]] = {}
        for (interface, counter), steps in increments.items():
            value = (base[(interface, counter)] + int(steps[start + 1 : i + 1].sum())) % modulo[interface]
            interfaces.setdefault(interface, {})[counter] = value
        out.append(((T0 + 10 * i) * NS, interfaces))
    return out


def collected(bus: EmbeddedBus, topic: str, expected: int, timeout_s: float = 120.0) -> list[dict]:
    consumer = bus.consumer([topic], "reader")
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(orjson.loads(m.value) for m in consumer.poll(1000, 0.2))
    return out


def cli_responses(output: str) -> list[dict]:
    """gnmi_cli's ``-display_type proto`` output: text SubscribeResponses separated by blank lines."""
    blocks = [b for b in output.split("\n\n") if b.strip()]
    return [MessageToDict(text_format.Parse(b, gnmi_pb2.SubscribeResponse())) for b in blocks]


@pytest.mark.parametrize("mode", ["sample", "on_change"])
def test_the_subscriber_receives_what_gnmi_cli_receives(gnmi_tools: Path, mode: str) -> None:
    rng = np.random.default_rng(3)
    increments = {(i, c): rng.integers(0, 10**6, 20) for i in ("eth0", "eth1") for c in ("in-octets", "out-octets")}
    responses = counter_notifications(readings(0, 20, increments, dict.fromkeys(increments, 0), {"eth0": 2**64, "eth1": 2**64}))
    # the stream ends after the last response, so gnmi_cli (the outside client) exits by itself
    with FakeGnmiTarget("r1", responses, hold_open=False) as fake:
        by_cli = [r for r in cli_responses(fake.gnmi_cli("-query", "interfaces", "-query_type", "s", "-display_type", "p")) if "update" in r]
        assert len(by_cli) == len(responses) == 40
        settings = GnmiSettings(targets=[target_settings(fake, mode=mode)], retry_initial_seconds=30)
        bus = EmbeddedBus(1)
        subscriber = GnmiSubscriber(settings.targets[0], settings, bus.producer(), "telemetry", seed=1)
        stop = threading.Event()
        runner = threading.Thread(target=run_subscribers, args=([subscriber], stop), kwargs={"max_seconds": 300})
        runner.start()
        try:
            by_us = collected(bus, "telemetry", len(by_cli))
        finally:
            stop.set()
            runner.join()
    assert by_us == by_cli
    assert subscriber.stats.sync_responses >= 1 and subscriber.stats.updates == 80


# -- the whole path on the real broker -------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """The subscriber's Prometheus metrics for target r1, by name."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nmt_gnmi_") and 'target="r1"' in line
    }


def wait_for(condition: Callable[[], bool], timeout_s: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def subscriber_env(settings: Settings, fake: FakeGnmiTarget, tmp_path: Path) -> dict[str, str]:
    target = {"name": fake.target, "address": fake.address, "ca_cert": str(fake.ca_cert), "sample_interval_seconds": 10}
    return {
        **os.environ,
        "NMT_BUS__KIND": "kafka",
        "NMT_BUS__BOOTSTRAP_SERVERS": settings.bus.bootstrap_servers,
        "NMT_STATE_DIR": str(tmp_path / "state"),
        "NMT_TOPICS__TELEMETRY": settings.topics.telemetry,
        "NMT_GNMI__TARGETS": json.dumps([target]),
        "NMT_GNMI__RETRY_INITIAL_SECONDS": "0.2",
        "NMT_GNMI__RETRY_MAX_SECONDS": "2",
    }


def true_rates(increments: dict[tuple[str, str], np.ndarray], count: int) -> pd.DataFrame:
    """The rates the collector must find: every reading after the first, increment / 10 s."""
    rows = [
        (T0 + 10 * i, f"r1/{interface}", f"{counter.replace('-', '_')}_per_s", steps[i] / 10.0)
        for (interface, counter), steps in increments.items()
        for i in range(1, count)
    ]
    return pd.DataFrame(rows, columns=["ts", "source", "metric", "value"])


@pytest.mark.kafka
def test_fake_target_to_subscriber_to_kafka_to_collector_keeps_windows_exact(
    gnmi_tools: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A device streams counters (a 64-bit wrap on eth0, a 32-bit counter wrapping on eth1), goes
    away mid-stream, and comes back rebooted (every counter from zero). The subscriber reconnects
    with back-off; the collector's windows equal the true rates, window by window."""
    settings = kafka_settings(kafka_bootstrap, str(tmp_path), window_seconds=WINDOW)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.telemetry], partitions=4)
    rng = np.random.default_rng(7)
    series = [("eth0", "in-octets"), ("eth0", "out-octets"), ("eth1", "in-octets")]
    increments = {key: rng.integers(10**6, 5 * 10**7, 40) for key in series}
    widths = {"eth0": 2**64, "eth1": 2**32}
    base = {("eth0", "in-octets"): 2**64 - 3 * 10**8, ("eth0", "out-octets"): 10**12, ("eth1", "in-octets"): 2**32 - 2 * 10**8}
    before = readings(0, 20, increments, base, widths)
    # rebooted between readings 19 and 20: every counter counts from zero again
    rebooted = readings(20, 20, increments, {key: int(increments[key][20]) for key in series}, widths)

    collector = StreamRunner(bus, telemetry_collector(settings, bus))
    metrics_port = free_port()
    with FakeGnmiTarget("r1", counter_notifications(before)) as fake:
        env = subscriber_env(settings, fake, tmp_path)
        cmd = [sys.executable, "-m", "nm_toolkit", "collect", "gnmi", "--metrics-port", str(metrics_port), "--json"]
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def took(n: int) -> bool:
                collector.step(0.2)
                return collector.service.counters.records >= n

            wait_for(lambda: took(3 * 19), what="the rates of the first 20 readings")
            fake.stop()  # the device goes away: the stream breaks
            wait_for(lambda: scrape(metrics_port).get("nmt_gnmi_stream_failures_total", 0) >= 3, what="failed reconnections")
            fake.start(counter_notifications(rebooted))  # back, rebooted, on the same address
            wait_for(lambda: took(3 * 39), what="the rates after the reboot")
            metrics = scrape(metrics_port)
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    (summary,) = orjson.loads(out)
    assert summary["streams"] >= 4 and summary["published"] == 2 * 40  # a notification per interface and reading
    assert metrics["nmt_gnmi_published_total"] == 80 and metrics["nmt_gnmi_connected"] == 1
    assert b"reconnecting in" in err

    stats = collector.service.counters
    assert (stats.dead_letter_records, stats.late_records, stats.records) == (0, 0, 3 * 39)
    # keyed by device, its readings all went to one partition, whose counter state saw eth0's in-octets
    # (64-bit) and eth1's (32-bit) wrap, and all three counters reset
    rates = [s.rates for s in collector.service._partitions.values() if s.rates.wraps or s.rates.resets]
    assert [(r.wraps, r.resets) for r in rates] == [(2, 3)]
    collector.service.close_all_windows(collector.emitter)
    collector.close()

    want = expected_windows(true_rates(increments, 40), WINDOW)
    got = windows_frame(read_all(bus, settings.topics.series, len(want))).sort_values(["source", "metric", "window"])
    assert len(got) == len(want) and not got.duplicated(["source", "metric", "window"]).any()
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    for column in ("sum", "min", "max"):
        assert np.allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-12)


def gnmic_messages(increments: dict[tuple[str, str], np.ndarray], count: int) -> Iterator[tuple[bytes, bytes]]:
    """gnmic's Kafka output for the readings: `json` for eth0 and `event` (not split) for eth1,
    keyed as with ``insert-key: true`` (``<source>_<subscription>``)."""
    values: dict[tuple[str, str], int] = dict.fromkeys(increments, 5 * 10**9)
    for i in range(count):
        ts = (T0 + 10 * i) * NS
        for key, steps in increments.items():
            values[key] = (values[key] + int(steps[i]) * (i > 0)) % 2**64
        yield b"r1:57400_ports", orjson.dumps({"sync-response": True}) if i == 0 else orjson.dumps(
            {
                "source": "r1:57400", "subscription-name": "ports", "timestamp": ts, "prefix": "/interfaces/interface[name=eth0]/state/counters",
                "updates": [{"Path": f"/{c}", "values": {c: values[("eth0", c)]}} for c in ("in-octets", "out-octets")],
            }
        )  # fmt: skip
        yield b"r1:57400_ports", orjson.dumps(
            [
                {
                    "name": "ports", "timestamp": ts,
                    "tags": {"interface_name": "eth1", "source": "r1:57400", "subscription-name": "ports"},
                    "values": {"/interfaces/interface/state/counters/in-octets": str(values[("eth1", "in-octets")])},
                }
            ]
        )  # fmt: skip


@pytest.mark.kafka
def test_gnmic_kafka_output_through_the_collector_keeps_windows_exact(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = kafka_settings(kafka_bootstrap, str(tmp_path), window_seconds=WINDOW)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.telemetry], partitions=4)
    rng = np.random.default_rng(11)
    increments = {key: rng.integers(10**3, 10**7, 30) for key in [("eth0", "in-octets"), ("eth0", "out-octets"), ("eth1", "in-octets")]}
    producer = bus.producer()
    for key, value in gnmic_messages(increments, 30):
        producer.send(settings.topics.telemetry, value, key)
    producer.flush()

    collector = StreamRunner(bus, telemetry_collector(settings, bus))
    rates = 2 * 28 + 29  # eth0's first message was a sync response

    def took_all() -> bool:
        collector.step(0.2)
        return collector.service.counters.records >= rates

    wait_for(took_all, what=f"the collector to take {rates} rates")
    stats = collector.service.counters
    assert (stats.dead_letter_records, stats.late_records, stats.records) == (0, 0, rates)
    collector.service.close_all_windows(collector.emitter)
    collector.close()

    truth = true_rates(increments, 30)
    truth = truth[(truth["source"] == "r1/eth1") | (truth["ts"] >= T0 + 20)].copy()
    truth["source"] = truth["source"].str.replace("r1/", "r1:57400/")  # gnmic names the device by its source
    want = expected_windows(truth, WINDOW)
    got = windows_frame(read_all(bus, settings.topics.series, len(want))).sort_values(["source", "metric", "window"])
    assert len(got) == len(want)
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    assert np.allclose(got["sum"].to_numpy(), want["sum"].to_numpy(), rtol=1e-12)
