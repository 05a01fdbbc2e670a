"""Every long-running service exposes Prometheus metrics while it runs: scraped here from the
collector as its own ``nmt collect run`` process, and from the forecasting, intent and decision
services on their runners, all on the real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecasting.service import forecast_service
from intent.data import load_intents
from intent.service import intent_runners
from intent.tagger import SklearnIntentTagger
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.bus.metrics import serve_metrics
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import load_settings
from nm_toolkit.controller.runner import decision_service
from nm_toolkit.schemas import SeriesPoint
from tests.test_controller_cli import fresh_forecast

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 1, 1, tzinfo=UTC)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the endpoint, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_collector_process_serves_its_counts_while_it_runs(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    telemetry = f"{tag}.telemetry"
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([telemetry])
    producer = bus.producer()
    for i in range(200):
        record = {"ts": 1_700_000_000 + 60 * i, "source": "cell-1", "metric": "traffic", "value": float(i)}
        producer.send(telemetry, orjson.dumps(record), b"cell-1")
    producer.send(telemetry, b"not json", b"cell-1")
    producer.flush()
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NMT_STATE_DIR": str(tmp_path), "NMT_TOPICS__TELEMETRY": telemetry, "NMT_TOPICS__SERIES": f"{tag}.series",
        "NMT_TOPICS__DEAD_LETTER": f"{tag}.dlq", "NMT_TOPICS__LATE": f"{tag}.late", "NMT_COLLECTOR__GROUP_ID": f"c-{tag}",
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "nm_toolkit", "collect", "run", "--metrics-port", "0", "--idle-exit", "60", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", process.stderr.readline())
            port = int(match.group(1)) if match else None
        assert port is not None, "the collector never said where its metrics are"
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline and value(samples, "nmt_messages_total", service="collector") < 201:
            samples = scrape(port)
            time.sleep(0.2)
        assert process.poll() is None, "the metrics were read while the service ran"
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert value(samples, "nmt_messages_total", service="collector") == 201
    assert value(samples, "nmt_dead_letters_total", service="collector") == 1
    assert value(samples, "nmt_collector_records", service="collector") == 200
    assert value(samples, "nmt_records_out_total", service="collector", topic=f"{tag}.dlq") == 1
    assert ("nmt_consumer_lag", (("partition", "0"), ("service", "collector"), ("topic", telemetry))) in samples or any(
        name == "nmt_consumer_lag" for name, _ in samples
    )
    assert value(samples, "nmt_batch_seconds_count", service="collector") >= 1
    assert process.returncode == 0


def test_forecast_intent_and_decision_services_serve_their_counts(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    extractor_dir = SklearnIntentTagger().fit(load_intents(REPO / "tests" / "data" / "nile_intents_slice.json")).save_pretrained(tmp_path / "x")
    settings = load_settings(
        state_dir=tmp_path, bus={"kind": "kafka", "bootstrap_servers": kafka_bootstrap},
        topics={name: f"{tag}.{name}" for name in ("series", "forecasts", "decisions", "intents", "intent_results", "prompts", "operator_intents")},
        forecast={"min_history": 24, "horizon": 6}, forecast_service={"group_id": f"f-{tag}", "model": "seasonal_mean", "dead_letter_topic": f"{tag}.fdlq"},
        intent={"group_id": f"i-{tag}", "extractor_dir": extractor_dir, "demand_topic": f"{tag}.demand", "dead_letter_topic": f"{tag}.idlq", "user_demand": "keywords"},
        controller={"group_id": f"d-{tag}", "adapter": "kafka", "dead_letter_topic": f"{tag}.ddlq", "interval_seconds": 30},
        policy={"capacities": {"cell-0000": 100.0}},
    )  # fmt: skip
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([settings.topics.series, settings.topics.forecasts, settings.topics.prompts])
    producer = bus.producer()
    for h in range(48):
        point = SeriesPoint(source="cell-1", metric="traffic", window_start=START + timedelta(hours=h), window_seconds=3600,
                            count=1, sum=float(h % 24), min=0.0, max=24.0)  # fmt: skip
        producer.send(settings.topics.series, point.model_dump_json().encode(), point.series_id.encode())
    producer.send(settings.topics.forecasts, fresh_forecast("cell-0000|mbps", 95.0).model_dump_json().encode(), b"cell-0000|mbps")
    for i in range(5):
        prompt = {"request_id": f"p{i}", "text": "watch a video", "location": "cell-1", "ts": (START + timedelta(minutes=i)).isoformat()}
        producer.send(settings.topics.prompts, orjson.dumps(prompt), b"cell-1")
    producer.flush()

    intents = intent_runners(settings, bus)
    runners = [StreamRunner(bus, forecast_service(settings, bus)), *intents.runners, StreamRunner(bus, decision_service(settings))]
    port = serve_metrics(runners, 0)
    deadline = time.monotonic() + 300  # four group joins and a forecast round, on a busy machine
    want = {"forecaster": 48, "intent": 5, "controller": 1}  # the controller also reads what the forecaster publishes
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        while time.monotonic() < deadline:
            for runner in runners:
                runner.step(timeout_s=0.1)
            samples = scrape(port)
            if all(value(samples, "nmt_messages_total", service=s) >= n for s, n in want.items()) and value(
                samples, "nmt_controller_rounds", service="controller"
            ) >= 1:
                break
    finally:
        for runner in runners:
            runner.close()
    for service, count in want.items():
        assert value(samples, "nmt_messages_total", service=service) >= count, service
    assert value(samples, "nmt_messages_total", service="forecaster") == 48
    assert value(samples, "nmt_forecaster_points", service="forecaster") == 48
    assert value(samples, "nmt_intent_user_intents", service="intent") == 5
    assert value(samples, "nmt_controller_decisions_accepted", service="controller") == 1
    assert value(samples, "nmt_records_out_total", service="controller", topic=settings.topics.decisions) == 1
