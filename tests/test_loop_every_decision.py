"""No dead ends (issue 23), on the real parts: telemetry and prompts go into a real Kafka broker,
and every kind of decision the NetGPT policies make from them is carried out by its actuator, as
the effect shows:

* ``reservation`` (a cell's traffic forecast near its capacity) -> a flow into a port queue of its
  own on a real Open vSwitch bridge, the queue a row in OVSDB;
* ``scale_compute`` (the edge site's prompts, its own reports and its cells' demand) -> the
  supervisor runs that many real ``nmt llm serve`` replicas;
* ``place_adapter`` (forecast requests per adapter, and per service class at the site's cells) ->
  the adapter is loaded in every replica of the site.

The decision stage runs as `nmt controller run --adapter openflow` (os-ken allows one controller per
process), and no decision of any round goes without an actuator (`without_actuator` is 0).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from collectors.service import telemetry_collector
from forecasting.service import forecast_service
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import load_settings
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import COMPLETION_TASK
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.supervisor import edge_supervisor
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
    tag = uuid.uuid4().hex[:8]
    names = ("telemetry", "dead_letter", "late", "series", "forecasts", "decisions", "intents", "intent_results", "operator_intents")
    topics = {name: f"{tag}.{name}" for name in names}
    controller_port = free_port()
    env = llm_env(kafka_bootstrap, tmp_path / "state", tiny_llms, tag) | {f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()} | {
        "NMT_LLM__ADAPTERS_DIR": str(tmp_path / "adapters"), "NMT_LLM__LOAD_INTERVAL_S": "0", "NMT_LLM__PROBE_INTERVAL_S": "0",
        "NMT_LLM__INITIAL_REPLICAS": "1", "NMT_LLM__MAX_REPLICAS": "2", "NMT_INTENT__USER_DEMAND": "keywords",
        "NMT_COLLECTOR__GROUP_ID": f"collector-{tag}", "NMT_FORECAST_SERVICE__GROUP_ID": f"forecaster-{tag}",
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}", "NMT_FORECAST_SERVICE__MODEL": "snaive_daily", "NMT_FORECAST__HORIZON": "6",
        "NMT_COLLECTOR__IDLE_CLOSE_SECONDS": "0.5", "NMT_POLICY__SITES": json.dumps({"edge-0": ["MI-*"]}),
        # the decision stage, as `nmt controller run` runs it: the NetGPT policies, the OpenFlow adapter
        "NMT_POLICY__ENABLED": json.dumps(["bandwidth_reservation", "edge_autoscale", "adapter_placement"]),
        "NMT_CONTROLLER__POLICY_PARAMS": json.dumps({"edge_autoscale": {"prompts_per_replica": 5.0, "max_replicas": 2},
                                                     "adapter_placement": {"top_k": 2, "min_share": 0.1}}),
        "NMT_POLICY__CAPACITIES": json.dumps({CELL: 92.0}),  # the cell's traffic peaks at 90: a reservation ahead of it
        "NMT_CONTROLLER__TARGETS": json.dumps({CELL: {"ipv4_dst": CELL_NET}}), "NMT_CONTROLLER__LISTEN_PORT": str(controller_port),
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    site = settings.llm.edge_site
    save_adapter(tiny_llms / "edge", tmp_path / "adapters", "completion")  # the site's completion adapter, loaded at start
    bus = KafkaBus(kafka_bootstrap, compacted_topics=settings.topics.tables())
    bus.create_topics([*topics.values(), settings.topics.prompts], partitions=2)

    with OpenVSwitch() as switch:
        # os-ken runs one controller per process: the decision stage is its own process, as deployed
        controller = subprocess.Popen(
            [sys.executable, "-m", "nm_toolkit", "controller", "run", "--adapter", "openflow", "--interval", "1", "--json"],
            env={**os.environ, "NMT_CONTROLLER__QUEUES__OVSDB": f"unix:{switch.db_socket}"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        switch.add_bridge(BRIDGE, controller=f"tcp:127.0.0.1:{controller_port}", ports=2, datapath_id=1)
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

            # the collector and the forecaster, in this process
            collector = StreamRunner(bus, telemetry_collector(settings, bus))
            forecasting = StreamRunner(bus, forecast_service(settings, bus))
            try:
                step_until([collector], lambda: collector.service.counters.records >= 4 * HOURS, "the collector to read the history")
                run_until_idle([collector], 0.5)
                collector.service.close_all_windows(collector.emitter)
                collector.commit()
                wanted = {f"{CELL}|traffic", f"{site}|prompts", f"{site}|adapter.lora-video.requests", "MI-1000|demand.video.requests"}
                store = forecasting.service.store
                step_until([forecasting], lambda: wanted <= set(store.series_ids()) and all(
                    len(store.history(s)) >= HOURS for s in wanted), "the forecaster to hold the history")  # fmt: skip
                forecasting.service.forecast_round(forecasting.emitter)
                forecasting.commit()
            finally:
                collector.close()
                forecasting.close()

            # the decision stage decides on the forecasts and carries the switch's decisions out on OVS
            decisions: dict[str, dict[str, object]] = {}
            reader = bus.reader([settings.topics.decisions])

            def decided() -> bool:
                for message in reader.poll(1000, 0.5):
                    if message.value:
                        decision = orjson.loads(message.value)
                        decisions[str(decision["kind"])] = decision
                return {"reservation", "scale_compute", "place_adapter"} <= set(decisions)

            step_until(replicas, decided, "the decision stage to publish every kind", timeout_s=300)
            reader.close()
            scale = decisions["scale_compute"]
            assert scale["target"] == site and scale["replicas"] == 2, scale["reason"]

            # reservation: a flow into a queue of its own, and the queue's row in OVSDB
            deadline = time.monotonic() + 120
            while not (flows := [f for f in switch.dump_flows(BRIDGE) if f"nw_dst={CELL_NET}" in f]) and time.monotonic() < deadline:
                time.sleep(0.5)
            (flow,) = flows
            queue_id = int(flow.split("set_queue:")[1].split(",")[0])
            assert queue_id in switch.qos_show(f"{BRIDGE}-p1"), flow

            # place_adapter: every replica of the site loads what is placed (the cell's video demand counts at its site)
            step_until(replicas, lambda: all({"completion", "lora-video"} <= set(r.service.completer.lm.cards) for r in replicas),
                       "every replica to load the placed adapter")  # fmt: skip
            assert all(r.service.counters.adapter_placements >= 2 for r in replicas)

            # scale_compute: the supervisor runs as many `nmt llm serve` replicas as decided
            supervisor = StreamRunner(bus, edge_supervisor(settings))
            counters = supervisor.service.counters
            step_until([supervisor], lambda: counters.decisions_applied >= 1 and counters.running_replicas == 2,
                       "the supervisor to run the decided replicas")  # fmt: skip
            assert counters.desired_replicas == 2 and counters.started >= 2
        finally:
            for runner in [*replicas, *([supervisor] if supervisor else [])]:
                runner.close()
            controller.send_signal(signal.SIGTERM)
            out, err = controller.communicate(timeout=120)
    assert controller.returncode == 0, err.decode()[-3000:]
    rounds = json.loads(out)
    assert rounds and sum(r["without_actuator"] for r in rounds) == 0  # every decision had an actuator
    assert max(r["openflow_applied"] for r in rounds) >= 1
    assert supervisor is not None and supervisor.service.counters.running_replicas == 0  # closing it stopped its replicas
