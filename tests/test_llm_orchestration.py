"""The network manages its own NetGPT service (issue 13): the edge service's load telemetry ->
collector -> forecast -> the autoscaling policy's scale_compute decision -> the replica supervisor
carries it out, observed in the supervisor's own counters. Embedded bus, one process; the
supervisor's replicas are real `nmt llm serve` processes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
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
        count = 15_000 + 15_000 * math.sin(2 * math.pi * at.hour / 24)
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
