"""No dead ends (issue 23), on the real parts: telemetry and prompts go into a real Kafka broker,
and every kind of decision the NetGPT policies make from them is carried out by its actuator, as
the effect shows:

* ``reservation`` (a cell's traffic forecast near its capacity) -> a flow into a port queue of its
  own on a real Open vSwitch bridge, the queue a row in OVSDB;
* ``scale_compute`` (the edge site's prompts, its own reports and its cells' demand) -> the
  supervisor runs that many real ``nmt llm serve`` replicas;
* ``place_adapter`` (forecast requests per adapter, and per service class at the site's cells) ->
  the adapter is loaded in every replica of the site.

The decision stage's ``decisions_without_actuator`` counter stays 0.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import load_settings
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import COMPLETION_TASK
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.supervisor import edge_supervisor
from nm_toolkit.pipeline import ClosedLoop
from policies.adapter_placement import AdapterPlacementPolicy
from policies.autoscale import EdgeAutoscalePolicy
from policies.bandwidth import BandwidthReservationPolicy
from tests.kafka_helpers import llm_env
from tests.test_controller_ovs import free_port

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.ovs,
    pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)"),
]
BRIDGE = "br-loop"
CELL = "cell-0000"
CELL_NET = "10.0.0.0/24"
HOURS = 8 * 24


def step_until(runners: list[StreamRunner], condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    """Step ``runners`` (stream services on the broker) until ``condition`` holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        for runner in runners:
            runner.step(timeout_s=0.3)


def save_adapter(base: Path, adapters_dir: Path, name: str) -> None:
    """A tiny LoRA adapter ``name`` of ``base`` in the site's adapter registry."""
    model, tokenizer = load_causal_lm(base)
    tuner = LoraFineTuner(LoraTrainConfig(rank=2, alpha=4, epochs=1.0, batch_size=2)).fit(model, tokenizer, [("a", " b")] * 2, name)
    AdapterRegistry(adapters_dir).save(tuner.model_, AdapterCard(name, COMPLETION_TASK, str(base)), tuner.losses_)


def history(site: str, now: datetime) -> Iterator[bytes]:
    """Eight days of hourly telemetry: the cell's traffic, the edge site's own reports (prompts,
    requests of the ``lora-video`` adapter) and one of its cells' demand for video."""
    for hour in range(HOURS, 0, -1):
        at = now - timedelta(hours=hour)
        # every daily peak falls 3 hours after now, inside the 6-hour horizon whatever the time of day
        daily = math.cos(2 * math.pi * (at.hour - now.hour - 3) / 24)
        ts = at.timestamp()
        records = [
            {"ts": ts, "source": CELL, "metric": "traffic", "value": round(60 + 30 * daily, 3)},
            {"ts": ts, "source": site, "metric": "prompts", "value": round(15_000 + 15_000 * daily)},
            {"ts": ts, "source": site, "metric": "adapter.lora-video.requests", "value": round(200 + 150 * daily)},
            {"ts": ts, "source": "MI-1000", "metric": "demand.video.requests", "value": round(100 + 80 * daily)},
        ]
        yield orjson.dumps({"records": records})


def test_every_decision_kind_is_carried_out_by_its_actuator_on_real_parts(
    tiny_llms: Path, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nm_toolkit.controller.runtime import start_openflow_controller

    tag = uuid.uuid4().hex[:8]
    names = ("telemetry", "dead_letter", "late", "series", "forecasts", "decisions", "intents", "intent_results", "operator_intents")
    topics = {name: f"{tag}.{name}" for name in names}
    env = llm_env(kafka_bootstrap, tmp_path / "state", tiny_llms, tag) | {f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()} | {
        "NMT_LLM__ADAPTERS_DIR": str(tmp_path / "adapters"), "NMT_LLM__LOAD_INTERVAL_S": "0", "NMT_LLM__PROBE_INTERVAL_S": "0",
        "NMT_LLM__INITIAL_REPLICAS": "1", "NMT_LLM__MAX_REPLICAS": "2", "NMT_INTENT__USER_DEMAND": "keywords",
        "NMT_COLLECTOR__GROUP_ID": f"collector-{tag}", "NMT_FORECAST_SERVICE__GROUP_ID": f"forecaster-{tag}",
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}", "NMT_FORECAST_SERVICE__MODEL": "snaive_daily", "NMT_FORECAST__HORIZON": "6",
        "NMT_COLLECTOR__IDLE_CLOSE_SECONDS": "0.5", "NMT_POLICY__SITES": json.dumps({"edge-0": ["MI-*"]}),
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    site = settings.llm.edge_site
    save_adapter(tiny_llms / "edge", tmp_path / "adapters", "completion")  # the site's completion adapter, loaded at start
    bus = KafkaBus(kafka_bootstrap, compacted_topics=settings.topics.tables())
    bus.create_topics([*topics.values(), settings.topics.prompts], partitions=2)

    with OpenVSwitch() as switch:
        controller = settings.controller.model_copy(update={
            "listen_port": free_port(), "targets": {CELL: {"ipv4_dst": CELL_NET}}, "expiry_interval_seconds": 0.5,
            "queues": settings.controller.queues.model_copy(update={"ovsdb": f"unix:{switch.db_socket}"}),
        })  # fmt: skip
        engine = start_openflow_controller(controller)
        switch.add_bridge(BRIDGE, controller=f"tcp:127.0.0.1:{controller.listen_port}", ports=2, datapath_id=1)
        assert engine.wait_for_switches(1, 30), "the bridge never connected to the os-ken app"

        # two replicas of the edge site share its prompts
        replicas = [StreamRunner(bus, edge_service(settings, edge_completer(settings))) for _ in range(2)]
        supervisor: StreamRunner | None = None
        try:
            save_adapter(tiny_llms / "edge", tmp_path / "adapters", "lora-video")  # the site has it, a placement loads it
            producer = bus.producer()
            now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            for message in history(site, now):
                producer.send(settings.topics.telemetry, message, b"history")
            cell = json.loads((tiny_llms / "context.json").read_text())["cells"][0]["cell"]
            for i in range(4):
                prompt = {"request_id": f"p{i}", "text": "stream a video near me", "location": cell, "deadline_s": 0.001}
                producer.send(settings.topics.prompts, orjson.dumps(prompt), cell.encode())
            producer.flush()
            step_until(replicas, lambda: sum(r.service.counters.requests for r in replicas) == 4, "the replicas to answer the prompts")
            assert all("lora-video" not in r.service.completer.lm.cards for r in replicas)

            capacities = {CELL: 92.0}  # the cell's traffic peaks at 90: a reservation ahead of it
            policies = [
                BandwidthReservationPolicy(),
                EdgeAutoscalePolicy(prompts_per_replica=5.0, max_replicas=2),
                AdapterPlacementPolicy(top_k=2, min_share=0.1),
            ]
            loop = ClosedLoop(bus, settings, policies=policies, adapters=[engine], capacities=capacities)
            try:
                step_until([loop.collector], lambda: loop.collector_service.counters.records >= 4 * HOURS, "the collector to read the history")
                loop.collect(idle_s=0.5, close_windows=True)
                wanted = {f"{CELL}|traffic", f"{site}|prompts", f"{site}|adapter.lora-video.requests", "MI-1000|demand.video.requests"}
                store = loop.forecast_service.store
                step_until([loop.forecasting], lambda: wanted <= set(store.series_ids()) and all(
                    len(store.history(s)) >= HOURS for s in wanted), "the forecaster to hold the history")  # fmt: skip
                loop.forecast()
                deciding = loop.decision_service
                step_until([loop.deciding], lambda: wanted <= set(deciding.forecasts), "the decision stage to read the forecasts")
                report = deciding.decide_round()
                loop.deciding.commit()
            finally:
                loop.close()
            accepted = {d.kind: d for d in report.guardrails.accepted}
            assert set(accepted) == {"reservation", "scale_compute", "place_adapter"}, report.guardrails.rejected
            assert deciding.counters.decisions_without_actuator == 0 and report.without_actuator == 0
            placed = {(d.target, d.adapter) for d in report.guardrails.accepted if d.kind == "place_adapter"}
            assert placed == {(site, "lora-video"), (site, "completion")}  # the cell's video demand counts at its site
            scale = accepted["scale_compute"]
            assert scale.target == site and scale.replicas == 2, scale.reason

            # reservation: a flow into a queue of its own, and the queue's row in OVSDB
            assert engine.flush(10)
            (flow,) = [f for f in switch.dump_flows(BRIDGE) if f"nw_dst={CELL_NET}" in f]
            queue_id = int(flow.split("set_queue:")[1].split(",")[0])
            assert queue_id in switch.qos_show(f"{BRIDGE}-p1"), flow
            assert not engine.errors

            # place_adapter: every replica of the site loads it
            step_until(replicas, lambda: all("lora-video" in r.service.completer.lm.cards for r in replicas),
                       "every replica to load the placed adapter")  # fmt: skip
            assert all(r.service.counters.adapter_placements >= 2 for r in replicas)
            assert all({"completion", "lora-video"} <= set(r.service.completer.lm.cards) for r in replicas)

            # scale_compute: the supervisor runs as many `nmt llm serve` replicas as decided
            supervisor = StreamRunner(bus, edge_supervisor(settings))
            counters = supervisor.service.counters
            step_until([supervisor], lambda: counters.decisions_applied >= 1 and counters.running_replicas == scale.replicas,
                       "the supervisor to run the decided replicas")  # fmt: skip
            assert counters.desired_replicas == 2 and counters.started >= 2
        finally:
            for runner in [*replicas, *([supervisor] if supervisor else [])]:
                runner.close()
            engine.close()
    if supervisor is not None:
        assert supervisor.service.counters.running_replicas == 0  # closing the supervisor stopped its replicas
