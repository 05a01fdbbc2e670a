"""The collector's own gNMI client: subscribe to devices, publish what they stream.

``nmt collect gnmi`` keeps one ``Subscribe`` stream (``STREAM`` mode, with ``SAMPLE`` or
``ON_CHANGE`` subscriptions) open to every target in ``settings.gnmi.targets`` and publishes each
notification to the telemetry topic in the protobuf JSON mapping, keyed by the device's name: the
form :mod:`collectors.gnmi` reads, in the partition that keeps the device's readings in order
(counter rates are computed per partition).

A stream that fails or ends is opened again after a back-off that doubles from
``retry_initial_seconds`` up to ``retry_max_seconds`` (with jitter, so that devices behind one
outage do not all come back at once). The back-off starts over only after a healthy stream: one
that delivered and stayed up for ``retry_max_seconds``, so a target that accepts and drops
subscriptions at once is backed off like one that refuses them. Each reconnection is logged; with
``max_retries`` a target that failed that many times in a row is given up.

What is lost while a device is unreachable is only resolution: its counters are cumulative, so the
first reading after the gap gives the rate over the gap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from collectors.gnmi import xpath_elems
from nm_toolkit.bus import Producer
from nm_toolkit.bus.deadletter import one_line

if TYPE_CHECKING:
    from nm_toolkit.config import GnmiSettings, GnmiTargetSettings

log = logging.getLogger(__name__)

_MODES = {"sample": gnmi_pb2.SAMPLE, "on_change": gnmi_pb2.ON_CHANGE}
_ENCODINGS = {"proto": gnmi_pb2.PROTO, "json": gnmi_pb2.JSON, "json_ietf": gnmi_pb2.JSON_IETF}
# Go gRPC servers (most gNMI agents) answer pings more often than every 5 minutes with GOAWAY.
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 300_000), ("grpc.keepalive_timeout_ms", 20_000)]
FLUSH_INTERVAL_S = 1.0


def gnmi_path(xpath: str) -> gnmi_pb2.Path:
    """A gNMI path from its string form (``/interfaces/interface[name=eth0]/state/counters``)."""
    return gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=name, key=keys) for name, keys in xpath_elems(xpath)])


def subscribe_request(target: GnmiTargetSettings, encoding: str) -> gnmi_pb2.SubscribeRequest:
    """The ``SubscribeRequest`` for one target: a ``STREAM`` subscription list, prefixed with the
    target's name (which devices echo in every notification), one subscription per path."""
    mode = _MODES[target.mode]
    interval_ns = int(target.sample_interval_seconds * 1e9) if target.mode == "sample" else 0
    subscriptions = [gnmi_pb2.Subscription(path=gnmi_path(p), mode=mode, sample_interval=interval_ns) for p in target.paths]
    return gnmi_pb2.SubscribeRequest(
        subscribe=gnmi_pb2.SubscriptionList(
            prefix=gnmi_pb2.Path(target=target.name),
            subscription=subscriptions,
            mode=gnmi_pb2.SubscriptionList.STREAM,
            encoding=_ENCODINGS[encoding],
        )
    )


def notification_message(response: gnmi_pb2.SubscribeResponse, target: str) -> bytes | None:
    """The telemetry message of one response (protobuf JSON of the ``SubscribeResponse``), naming
    the device where the device left ``prefix.target`` empty; None for a response that carries no
    notification (a sync response)."""
    if response.WhichOneof("response") != "update":
        return None
    if not response.update.prefix.target:
        response = gnmi_pb2.SubscribeResponse.FromString(response.SerializeToString())
        response.update.prefix.target = target
    return orjson.dumps(MessageToDict(response))


def backoff_delay(failures: int, initial_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed connections in a row: doubling from
    ``initial_s``, capped at ``max_s``, times a factor in [0.5, 1) from ``jitter`` in [0, 1)."""
    return min(max_s, initial_s * 2.0 ** min(failures - 1, 62)) * (0.5 + 0.5 * jitter)


@dataclass
class TargetStats:
    """What happened to one target's subscription, for the summary, the logs and the metrics."""

    streams: int = 0
    stream_failures: int = 0
    consecutive_failures: int = 0
    responses: int = 0
    notifications: int = 0
    updates: int = 0
    sync_responses: int = 0
    published: int = 0
    connected: bool = False
    given_up: bool = False
    retry_in_s: float = 0.0
    last_error: str = ""


class GnmiSubscriber:
    """Keeps one target's subscription open and publishes what it streams to ``topic``.

    ``run`` blocks until ``stop`` is set (or the target is given up); :meth:`cancel` ends the
    stream in progress at once. ``seed`` makes the jitter of the back-off reproducible.
    """

    def __init__(
        self,
        target: GnmiTargetSettings,
        settings: GnmiSettings,
        producer: Producer,
        topic: str,
        *,
        seed: int | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        self.producer = producer
        self.topic = topic
        self.seed = seed
        self.stats = TargetStats()
        self._call: grpc.Future | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    def _channel(self) -> grpc.Channel:
        target = self.target
        if target.insecure:
            return grpc.insecure_channel(target.address, options=_CHANNEL_OPTIONS)
        read = lambda path: path.read_bytes() if path is not None else None
        credentials = grpc.ssl_channel_credentials(read(target.ca_cert), read(target.client_key), read(target.client_cert))
        options = list(_CHANNEL_OPTIONS)
        if target.server_name:
            options.append(("grpc.ssl_target_name_override", target.server_name))
        return grpc.secure_channel(target.address, credentials, options=options)

    def _metadata(self) -> list[tuple[str, str]]:
        if self.target.username is None:
            return []
        return [("username", self.target.username), ("password", self.target.password or "")]

    def cancel(self) -> None:
        """End the stream in progress (``run`` then sees ``stop`` and returns)."""
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Subscribe, publish, and subscribe again after a back-off when the stream fails or ends,
        until ``stop`` is set or ``max_retries`` failures in a row give the target up.

        A stream counts as failed unless it delivered something and stayed up for
        ``retry_max_seconds``: a target that accepts and drops subscriptions at once is backed off
        like one that refuses them."""
        rng = random.Random(self.seed)
        name, stats, settings = self.target.name, self.stats, self.settings
        request = subscribe_request(self.target, settings.encoding)
        while not stop.is_set():
            opened = time.monotonic()
            delivered = self._stream(request, stop)
            if stop.is_set():
                break
            stable = delivered and time.monotonic() - opened >= settings.retry_max_seconds
            stats.consecutive_failures = 0 if stable else stats.consecutive_failures + 1
            stats.stream_failures += 1
            if settings.max_retries is not None and stats.consecutive_failures > settings.max_retries:
                stats.given_up = True
                log.error("gNMI target %s (%s): giving up after %d failed streams in a row: %s",
                          name, self.target.address, stats.consecutive_failures, stats.last_error)  # fmt: skip
                break
            failures = max(stats.consecutive_failures, 1)
            stats.retry_in_s = backoff_delay(failures, settings.retry_initial_seconds, settings.retry_max_seconds, rng.random())
            log.warning("gNMI target %s (%s): %s; reconnecting in %.1f s (failure %d in a row)",
                        name, self.target.address, stats.last_error, stats.retry_in_s, stats.consecutive_failures)  # fmt: skip
            stop.wait(stats.retry_in_s)
        stats.retry_in_s = 0.0

    def _stream(self, request: gnmi_pb2.SubscribeRequest, stop: threading.Event) -> bool:
        """One stream, until it fails, ends or is cancelled; whether it delivered a response.

        The request side stays open while the stream lasts: some agents end a subscription
        whose client half-closed."""
        stats = self.stats
        done = threading.Event()

        def requests() -> Iterator[gnmi_pb2.SubscribeRequest]:
            yield request
            done.wait()

        delivered = False
        with self._channel() as channel:
            call = gnmi_pb2_grpc.gNMIStub(channel).Subscribe(requests(), metadata=self._metadata())
            with self._lock:
                self._call = call
            if stop.is_set():
                call.cancel()
            stats.streams += 1
            last_flush = time.monotonic()
            try:
                for response in call:
                    if not delivered:
                        delivered = stats.connected = True
                        log.info("gNMI target %s (%s): subscribed", self.target.name, self.target.address)
                    self._publish(response)
                    if time.monotonic() - last_flush >= FLUSH_INTERVAL_S:
                        self.producer.flush()
                        last_flush = time.monotonic()
                stats.last_error = "the target ended the stream"
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                stats.last_error = one_line(f"{code.name if code else 'error'}: {details}")
            finally:
                done.set()
                with self._lock:
                    self._call = None
                stats.connected = False
                self.producer.flush()
        return delivered

    def _publish(self, response: gnmi_pb2.SubscribeResponse) -> None:
        stats = self.stats
        stats.responses += 1
        kind = response.WhichOneof("response")
        if kind == "sync_response":
            stats.sync_responses += 1
            return
        if kind == "error":  # deprecated in gNMI 0.7 (errors are the stream's status), still sent by old agents
            log.warning("gNMI target %s sent an error: %s", self.target.name, one_line(str(response.error.message)))
            return
        message = notification_message(response, self.target.name)
        if message is None:
            return
        stats.notifications += 1
        stats.updates += len(response.update.update)
        self.producer.send(self.topic, message, self.target.name.encode())
        stats.published += 1


def run_subscribers(
    subscribers: Sequence[GnmiSubscriber], stop: threading.Event, *, max_seconds: float | None = None
) -> None:
    """Run every subscriber in its own thread until ``stop`` is set (or ``max_seconds`` passed, or
    every target was given up); a failed write to the bus stops them all and is raised here."""
    failures: list[BaseException] = []

    def run(subscriber: GnmiSubscriber) -> None:
        try:
            subscriber.run(stop)
        except BaseException as exc:  # noqa: BLE001 - a DeliveryFailed, or a bug: stop everything, re-raised below
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(s,), name=f"gnmi-{s.target.name}", daemon=True) for s in subscribers]
    for thread in threads:
        thread.start()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while not stop.is_set() and any(t.is_alive() for t in threads):
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(0.2)
    stop.set()
    for subscriber in subscribers:
        subscriber.cancel()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class GnmiMetrics(Collector):
    """Prometheus metric families of the subscribers, labelled by target, read at scrape time."""

    _COUNTERS: ClassVar[dict[str, str]] = {
        "streams": "Subscribe streams opened",
        "stream_failures": "Streams that failed or ended (each followed by a reconnection)",
        "responses": "SubscribeResponses received",
        "notifications": "Notifications received",
        "updates": "Updates in the notifications received",
        "published": "Notifications published to the telemetry topic",
    }

    def __init__(self, subscribers: Sequence[GnmiSubscriber]) -> None:
        self.subscribers = subscribers

    def collect(self) -> Iterator[Metric]:
        for name, help_text in self._COUNTERS.items():
            family = CounterMetricFamily(f"nmt_gnmi_{name}", help_text, labels=["target"])
            for s in self.subscribers:
                family.add_metric([s.target.name], float(getattr(s.stats, name)))
            yield family
        gauges = {
            "connected": "Whether the target's stream is up",
            "consecutive_failures": "Failed connections in a row",
            "retry_in_s": "The back-off before the next reconnection",
        }
        for name, help_text in gauges.items():
            gauge = GaugeMetricFamily(f"nmt_gnmi_{name}", help_text, labels=["target"])
            for s in self.subscribers:
                gauge.add_metric([s.target.name], float(getattr(s.stats, name)))
            yield gauge


def summary(subscribers: Sequence[GnmiSubscriber]) -> list[dict[str, object]]:
    """One row per target: its address and counters."""
    return [{"target": s.target.name, "address": s.target.address, **asdict(s.stats)} for s in subscribers]
