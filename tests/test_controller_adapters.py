"""ONOS (against a small local HTTP server standing in for its REST API), Faucet YAML, the
decisions topic, and the decision controller's round (policies -> guardrails -> adapters)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.config import ControllerSettings, Settings
from nm_toolkit.controller.faucet import FaucetAdapter
from nm_toolkit.controller.onos import OnosAdapter
from nm_toolkit.controller.service import DecisionController
from nm_toolkit.controller.topic import DecisionTopicAdapter
from nm_toolkit.schemas import Acl, DecisionAdapter, PlaceAdapter, QosQueue, RateLimit, Reroute, Reservation
from policies.bandwidth import BandwidthReservationPolicy
from tests.test_policy_helpers import forecast

TARGETS = {"cell-1": {"ipv4_dst": "10.0.1.0/24"}}


def reservation(key: str = "r1", bandwidth: float = 5.0, ttl: float = 60.0, **kw: object) -> Reservation:
    return Reservation(idempotency_key=key, policy="t", target="cell-1", reason="t", bandwidth=bandwidth,
                       capacity=10.0, forecast_peak=4.0, ttl_seconds=ttl, **kw)


def cap(ttl: float = 60.0) -> RateLimit:
    return RateLimit(idempotency_key="r1", policy="t", target="cell-1", reason="t", rate_kbps=5000, ttl_seconds=ttl)


def deny_telnet() -> Acl:
    return Acl(idempotency_key="a1", policy="t", target="cell-1", reason="t", action="deny",
               match={"tcp_dst": 23, "ipv4_src": "10.9.0.0/16"})


class FakeOnos(BaseHTTPRequestHandler):
    """Records requests; answers POSTs with 201 and a Location, as ONOS's REST API does."""

    requests: list[tuple[str, str, dict | None]] = []
    counter = 0

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, body))
        assert self.headers["Authorization"].startswith("Basic ")
        return body

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        FakeOnos.counter += 1
        collection = self.path.split("?")[0]
        self.send_response(201)
        self.send_header("Location", f"http://127.0.0.1{collection}/{FakeOnos.counter}")
        self.end_headers()

    def do_DELETE(self) -> None:  # noqa: N802
        self._record()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def onos_url() -> Iterator[str]:
    FakeOnos.requests, FakeOnos.counter = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOnos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/onos/v1"
    server.shutdown()
    server.server_close()


def test_onos_meters_flows_and_intents_are_posted_and_deleted_on_expiry(onos_url: str) -> None:
    now = [datetime.now(UTC).timestamp()]
    settings = ControllerSettings(onos_url=onos_url, targets=TARGETS, onos_devices=["of:0000000000000001"])
    adapter = OnosAdapter(settings, clock=lambda: now[0])
    reroute = Reroute(idempotency_key="rr", policy="t", target="cell-1", reason="t", match={"udp_dst": 5004}, ttl_seconds=40,
                      path=["of:0000000000000001/1", "of:0000000000000002", "of:0000000000000003/4"])
    outcomes = adapter.apply([cap(ttl=30), deny_telnet(), reroute])
    assert [o.status for o in outcomes] == ["applied", "applied", "applied"]
    (meter_post, flow_post, acl_post, intent_post) = FakeOnos.requests
    assert meter_post[:2] == ("POST", "/onos/v1/meters/of:0000000000000001")
    assert meter_post[2]["bands"] == [{"type": "DROP", "rate": 5000, "burstSize": 0}]
    assert flow_post[1].startswith("/onos/v1/flows/of:0000000000000001?appId=")
    flow = flow_post[2]
    assert {"type": "METER", "meterId": "1"} in flow["treatment"]["instructions"]  # id from the Location
    assert {"type": "IPV4_DST", "ip": "10.0.1.0/24"} in flow["selector"]["criteria"]
    assert {"type": "ETH_TYPE", "ethType": "0x800"} in flow["selector"]["criteria"]
    assert acl_post[2]["treatment"]["instructions"] == [{"type": "NOACTION"}]
    assert {"type": "TCP_DST", "tcpPort": 23} in acl_post[2]["selector"]["criteria"]
    intent = intent_post[2]
    assert intent["type"] == "PointToPointIntent" and intent["ingressPoint"] == {"device": "of:0000000000000001", "port": "1"}
    assert intent["constraints"] == [{"type": "WaypointConstraint", "waypoints": ["of:0000000000000002"]}]
    # the same decision again changes nothing
    assert [o.status for o in adapter.apply([cap(ttl=30)])] == ["unchanged"]
    assert len(FakeOnos.requests) == 4
    # TTL: the reservation's flow, then its meter, are deleted
    now[0] += 31
    assert adapter.expire(now[0]) == ["r1"]
    assert [(m, p) for m, p, _ in FakeOnos.requests[4:]] == [
        ("DELETE", "/onos/v1/flows/of:0000000000000001/2"), ("DELETE", "/onos/v1/meters/of:0000000000000001/1"),
    ]
    now[0] += 10  # the intent's TTL runs out too
    assert adapter.expire(now[0]) == ["rr"] and FakeOnos.requests[-1][:2] == ("DELETE", "/onos/v1/intents/4")
    assert adapter.withdraw(["a1"]) == ["a1"] and FakeOnos.requests[-1][:2] == ("DELETE", "/onos/v1/flows/of:0000000000000001/3")
    # a reservation is a guarantee: its flow names its own queue and has no meter
    assert [o.status for o in adapter.apply([reservation("r2", ttl=300)])] == ["applied"]
    method, path, flow = FakeOnos.requests[-1]
    assert method == "POST" and path.startswith("/onos/v1/flows/")
    assert {"type": "QUEUE", "queueId": 8} in flow["treatment"]["instructions"]
    assert not any(i["type"] == "METER" for i in flow["treatment"]["instructions"])


def test_onos_unreachable_is_a_failed_outcome_with_the_fix() -> None:
    adapter = OnosAdapter(ControllerSettings(onos_url="http://127.0.0.1:9/onos/v1", targets=TARGETS), timeout_s=1)
    (outcome,) = adapter.apply([deny_telnet()])
    assert outcome.status == "failed" and "controller.onos_url" in outcome.detail
    assert adapter.state.get("a1") is None  # nothing counted as applied


def test_faucet_yaml_has_acl_rules_by_priority_meters_and_a_final_allow(tmp_path: Path) -> None:
    now = [datetime.now(UTC).timestamp()]
    settings = ControllerSettings(targets=TARGETS, faucet_config=tmp_path / "faucet-nmt.yaml", faucet_dp="edge-sw")
    adapter = FaucetAdapter(settings, clock=lambda: now[0])
    queue = QosQueue(idempotency_key="q", policy="t", target="cell-1", reason="t", queue_id=2, match={"udp_dst": 5060})
    outcomes = adapter.apply([cap(ttl=30), deny_telnet().model_copy(update={"priority": 500}), queue, reservation("r2")])
    assert [o.status for o in outcomes] == ["applied", "applied", "unsupported", "unsupported"]
    config = yaml.safe_load(settings.faucet_config.read_text())
    deny, limit, allow_all = config["acls"]["nmt-edge-sw"]
    assert deny["rule"] == {"eth_type": 2048, "ip_proto": 6, "ipv4_src": "10.9.0.0/255.255.0.0", "tcp_dst": 23,
                            "actions": {"allow": False}}
    assert limit["rule"]["actions"] == {"allow": True, "meter": "nmt-edge-sw-1"}
    assert allow_all == {"rule": {"actions": {"allow": True}}}
    assert config["meters"]["nmt-edge-sw-1"] == {
        "meter_id": 1, "entry": {"flags": ["KBPS"], "bands": [{"type": "DROP", "rate": 5000}]},
    }
    now[0] += 31
    assert adapter.expire(now[0]) == ["r1"]
    config = yaml.safe_load(settings.faucet_config.read_text())
    assert "meters" not in config and len(config["acls"]["nmt-edge-sw"]) == 2


def test_round_applies_only_what_passes_guardrails_and_publishes_to_the_topic() -> None:
    settings = Settings(policy={"capacities": {"cell-1": 100.0}, "sites": {"edge-a": ["cell-*"]}})
    bus = EmbeddedBus()
    bus.create_topics([settings.topics.decisions])
    topic = DecisionTopicAdapter(bus.producer(), settings.topics.decisions)
    controller = DecisionController(settings, [BandwidthReservationPolicy()], [topic])
    report = controller.decide([forecast("cell-1|mbps", [95.0])])
    assert report.summary()["kafka_applied"] == 1
    # a hand-made over-capacity reservation and a block-all ACL are stopped
    bad = [reservation("huge", bandwidth=500.0), Acl(idempotency_key="all", policy="t", target="cell-1",
                                                     reason="t", action="deny", match={})]
    placed = PlaceAdapter(idempotency_key="p", policy="t", target="edge-a", reason="t", adapter="lora-x")
    report = controller.apply([*bad, placed])
    assert {r.rule for r in report.guardrails.rejected} == {"capacity", "block_all"}
    consumer = bus.consumer([settings.topics.decisions], "test")
    published = [DecisionAdapter.validate_json(m.value) for m in consumer.poll(100, 1.0)]
    assert sorted(d.kind for d in published) == ["place_adapter", "reservation"]
    # a higher-priority cap on the same cell supersedes the reservation: it is withdrawn
    cap = RateLimit(idempotency_key="cap", policy="t", target="cell-1", reason="t", rate_kbps=100, priority=900)
    report = controller.apply([cap])
    assert report.guardrails.superseded and "cap" in controller.in_force
    assert not any(d.kind == "reservation" for d in controller.in_force.values())


def test_topic_carries_changes_and_republishes_a_restated_decision_after_half_its_ttl() -> None:
    bus = EmbeddedBus()
    bus.create_topics(["d"])
    now = [datetime.now(UTC).timestamp()]
    topic = DecisionTopicAdapter(bus.producer(), "d", clock=lambda: now[0])
    first = reservation(ttl=100)
    assert [o.status for o in topic.apply([first])] == ["applied"]
    restated = first.model_copy(update={"id": "again", "reason": "same again"})
    assert [o.status for o in topic.apply([restated])] == ["unchanged"]
    assert [o.status for o in topic.apply([reservation(bandwidth=6.0, ttl=100)])] == ["applied"]  # changed
    now[0] += 51
    assert [o.status for o in topic.apply([reservation(bandwidth=6.0, ttl=100)])] == ["applied"]  # refresh due
    assert len(bus.consumer(["d"], "t").poll(10, 1.0)) == 3
