"""The network manages its own NetGPT service (issue 13): the edge service's load telemetry ->
collector -> forecast -> the autoscaling policy's scale_compute decision -> the replica supervisor
carries it out, observed in the supervisor's own counters. Embedded bus, one process; the
supervisor's replicas are real `nmt llm serve` processes."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import load_settings
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.supervisor import edge_supervisor
from nm_toolkit.pipeline import ClosedLoop
from nm_toolkit.schemas import ScaleCompute
from policies.autoscale import EdgeAutoscalePolicy


def test_edge_load_drives_a_scale_decision_the_supervisor_carries_out(tiny_llms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "NMT_LLM__EDGE_MODEL": str(tiny_llms / "edge"), "NMT_LLM__CONTEXT_STORE": str(tiny_llms / "context.json"),
        "NMT_LLM__ADAPTERS_DIR": str(tmp_path / "adapters"), "NMT_LLM__MAX_NEW_TOKENS": "3", "NMT_LLM__LOAD_INTERVAL_S": "0.001",
        "NMT_LLM__INITIAL_REPLICAS": "1", "NMT_LLM__MAX_REPLICAS": "3",
        "NMT_FORECAST_SERVICE__MODEL": "snaive_daily", "NMT_FORECAST__HORIZON": "6", "NMT_COLLECTOR__IDLE_CLOSE_SECONDS": "0.5",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings = load_settings()
    site = settings.llm.edge_site
    bus = EmbeddedBus()
    producer = bus.producer()
    # eight days of the site's hourly prompt counts, as its edge service reports them (peak 30,000/h)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    history = []
    for hour in range(8 * 24, 0, -1):
        at = now - timedelta(hours=hour)
        # the daily peak falls 3 hours after now, inside the 6-hour horizon whatever the time of day the test runs
        count = 15_000 + 15_000 * math.cos(2 * math.pi * (at.hour - now.hour - 3) / 24)
        history.append({"ts": at.timestamp(), "source": site, "metric": "prompts", "value": round(count)})
    producer.send(settings.topics.telemetry, orjson.dumps({"records": history}), site.encode())
    # and the live edge service reporting its own load on top
    cell = json.loads((tiny_llms / "context.json").read_text())["cells"][0]["cell"]
    for i in range(3):
        producer.send(settings.topics.prompts, orjson.dumps({"request_id": f"p{i}", "text": "coffee near me", "location": cell, "deadline_s": 0.001}))
    edge = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
    run_until_idle([edge])
    edge.finish()
    edge.close()
    assert edge.service.counters.answered_at_edge == 3

    loop = ClosedLoop(bus, settings, policies=[EdgeAutoscalePolicy(prompts_per_replica=5.0, max_replicas=3)])
    report = loop.run_once(idle_s=0.2, close_windows=True)
    loop.close()
    assert f"{site}|prompts" in {f.series_id for f in report.forecasts}
    [decision] = [d for d in report.decisions if isinstance(d, ScaleCompute)]
    # the peak of 30,000 prompts an hour is 8.3/s: 2 replicas of 5/s with 20% headroom, more for the interval's upper bound
    assert decision.target == site and decision.replicas in (2, 3), decision.reason

    supervisor = StreamRunner(bus, edge_supervisor(settings))
    try:
        run_until_idle([supervisor])
        supervisor.step(timeout_s=0.1)
        counters = supervisor.service.counters
        replicas = decision.replicas
        assert (counters.decisions_applied, counters.desired_replicas, counters.running_replicas) == (1, replicas, replicas)
        assert supervisor.stats_dict()["running_replicas"] == replicas  # what its metrics endpoint exports
    finally:
        supervisor.close()
    assert supervisor.service.counters.running_replicas == 0


@pytest.mark.kafka
def test_on_the_broker_edge_load_drives_a_placement_the_edge_service_carries_out(
    tiny_llms: Path, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 on the real broker: the edge service's own load reports (``SITE|adapter.<name>.requests``)
    -> collector -> forecast -> the adapter-placement policy's place_adapter decision on the decisions
    topic -> the same edge service loads the adapter, as its own counters (its metrics) show."""
    import uuid

    from nm_toolkit.bus.kafka import KafkaBus
    from nm_toolkit.llm.lora import ADAPTER_CARD, AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
    from nm_toolkit.llm.offline import load_causal_lm
    from nm_toolkit.schemas import PlaceAdapter
    from policies.adapter_placement import AdapterPlacementPolicy
    from tests.kafka_helpers import llm_env

    def until(runner: StreamRunner, condition: Callable[[], bool], timeout_s: float = 90) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            runner.step(timeout_s=0.5)
        return condition()

    tag = uuid.uuid4().hex[:8]
    topics = {name: f"{tag}.{name}" for name in ("telemetry", "dead_letter", "late", "series", "forecasts", "decisions")}
    env = llm_env(kafka_bootstrap, tmp_path / "state", tiny_llms, tag) | {f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()} | {
        "NMT_LLM__ADAPTERS_DIR": str(tmp_path / "adapters"), "NMT_LLM__LOAD_INTERVAL_S": "0.001", "NMT_CONTROLLER__ADAPTER": "kafka",
        "NMT_COLLECTOR__GROUP_ID": f"collector-{tag}", "NMT_FORECAST_SERVICE__GROUP_ID": f"forecaster-{tag}",
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}", "NMT_FORECAST_SERVICE__MODEL": "snaive_daily", "NMT_FORECAST__HORIZON": "6",
        "NMT_COLLECTOR__IDLE_CLOSE_SECONDS": "0.5",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    site = settings.llm.edge_site
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([*topics.values(), settings.topics.prompts], partitions=1)
    edge = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
    try:
        # an adapter registered after the edge started: loaded only when a decision places it
        model, tokenizer = load_causal_lm(tiny_llms / "edge")
        tuner = LoraFineTuner(LoraTrainConfig(rank=2, alpha=4, epochs=1.0, batch_size=2)).fit(model, tokenizer, [("a", " b")] * 2, "lora-video")
        registry = AdapterRegistry(tmp_path / "adapters")
        registry.save(tuner.model_, AdapterCard("lora-video", "completion", str(tiny_llms / "edge")), tuner.losses_)
        assert (registry.path("lora-video") / ADAPTER_CARD).is_file()

        # a week of the site's reports of requests per adapter, then the live service's own
        producer = bus.producer()
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for hour in range(8 * 24, 0, -1):
            at = now - timedelta(hours=hour)
            busy = round(200 + 150 * math.sin(2 * math.pi * at.hour / 24))
            records = [{"ts": at.timestamp(), "source": site, "metric": "adapter.lora-video.requests", "value": busy},
                       {"ts": at.timestamp(), "source": site, "metric": "prompts", "value": busy}]  # fmt: skip
            producer.send(settings.topics.telemetry, orjson.dumps({"records": records}), site.encode())
        cell = json.loads((tiny_llms / "context.json").read_text())["cells"][0]["cell"]
        for i in range(3):
            producer.send(settings.topics.prompts, orjson.dumps({"request_id": f"p{i}", "text": "coffee near me", "location": cell, "deadline_s": 0.001}))
        producer.flush()
        assert until(edge, lambda: edge.service.counters.requests == 3)
        edge.finish()
        edge.commit()
        assert edge.service.counters.requests == 3 and edge.stats_dict()["adapter_loads"] == 0

        # the loop's three services, each stepped until it has read what the one before it wrote
        # (on the broker a member first waits for its partitions: run_until_idle alone would stop early)
        loop = ClosedLoop(bus, settings, policies=[AdapterPlacementPolicy(top_k=1, min_share=0.1)])
        try:
            history = 2 * 8 * 24  # records: two series, eight days; the live report adds more
            assert until(loop.collector, lambda: loop.collector_service.counters.records > history)
            loop.collect(idle_s=0.5, close_windows=True)
            store = loop.forecast_service.store
            assert until(loop.forecasting, lambda: f"{site}|adapter.lora-video.requests" in store.series_ids()
                         and len(store.history(f"{site}|adapter.lora-video.requests")) >= 8 * 24)  # fmt: skip
            forecasts, _ = loop.forecast()
            assert f"{site}|adapter.lora-video.requests" in {f.series_id for f in forecasts}
            deciding = loop.decision_service
            assert until(loop.deciding, lambda: f"{site}|adapter.lora-video.requests" in deciding.forecasts)
            report = deciding.decide_round()
            loop.deciding.commit()
        finally:
            loop.close()
        [placed] = [d for d in report.guardrails.accepted if isinstance(d, PlaceAdapter)]
        assert (placed.target, placed.adapter) == (site, "lora-video"), placed.reason

        assert until(edge, lambda: edge.service.counters.adapter_loads >= 1)
        stats = edge.stats_dict()  # what its metrics endpoint exports
        assert (stats["adapter_placements"], stats["adapter_loads"], stats["placement_failures"]) == (1, 1, 0)
        assert "lora-video" in edge.service.completer.lm.cards
    finally:
        edge.close()
