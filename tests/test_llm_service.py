"""The prompt service on the stream runtime (embedded bus and the real Kafka broker), and the CLI around it."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.base import Bus, Message
from nm_toolkit.bus.deadletter import ORIGIN, REASON, SERVICE
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.cli import app
from nm_toolkit.config import Settings, load_settings
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.service import EdgeService, edge_service

TINY = InitConfig(
    arch="gpt2", preset="tiny", steps=5, batch_size=4, seed=3,
    corpus=CorpusConfig(user_prompts=100, intents=50, telemetry=50, contexts=50, vocabulary_repeats=1),
)


@pytest.fixture(scope="module")
def edge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("llm")
    save_initialised(root / "edge", *initialise_model(TINY))
    synthetic_city(seed=4, districts=3, cells_per_district=2, users=5).save(root / "context.json")
    yield root
    torch.set_num_threads(threads)


@pytest.fixture()
def settings_env(edge_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(edge_dir / "edge"))
    monkeypatch.setenv("NMT_LLM__CONTEXT_STORE", str(edge_dir / "context.json"))
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(edge_dir / "adapters"))
    monkeypatch.setenv("NMT_LLM__MAX_NEW_TOKENS", "6")
    monkeypatch.setenv("NMT_LLM__MAX_PROMPT_CHARS", "200")
    return edge_dir


def a_cell(edge_dir: Path) -> str:
    return sorted(json.loads((edge_dir / "context.json").read_text())["cells"], key=lambda c: c["cell"])[0]["cell"]


def prompt(request_id: str, text: str, cell: str, **extra: object) -> bytes:
    return json.dumps({"request_id": request_id, "text": text, "location": cell, **extra}).encode()


def read_all(bus: Bus, topic: str, group: str, expected: int, timeout_s: float = 60.0) -> list[Message]:
    consumer = bus.consumer([topic], group)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += consumer.poll(100, 0.5)
    consumer.close()
    return out


def replies(bus: Bus, topic: str, group: str, expected: int, timeout_s: float = 60.0) -> list[dict]:
    return [json.loads(m.value) for m in read_all(bus, topic, group, expected, timeout_s)]


def service_for(settings: Settings) -> EdgeService:
    return edge_service(settings, edge_completer(settings))


def outcomes(bus: EmbeddedBus, settings: Settings, expected: int) -> list[dict]:
    """The edge's one record per prompt: an answer (``served_by: edge``, or an error) or the
    request it escalated to the cloud (``served_by: cloud-request``); probes left out."""
    answers = [json.loads(m.value) for m in bus.messages(settings.topics.answers)]
    escalated = [
        {**json.loads(m.value), "served_by": "cloud-request", "status": "ok"}
        for m in bus.messages(settings.topics.cloud_requests)
        if json.loads(m.value)["kind"] == "request"
    ]
    assert len(answers) + len(escalated) == expected, (answers, escalated)
    return answers + escalated


def serve(bus: Bus, settings: Settings) -> tuple[StreamRunner, dict[str, float]]:
    """Run the prompt service on the embedded bus until it has nothing left to read."""
    runner = StreamRunner(bus, service_for(settings))
    run_until_idle([runner])
    stats = runner.stats_dict()
    runner.close()
    return runner, stats


def test_bad_prompts_become_error_records_and_dead_letters_and_the_service_keeps_serving(settings_env: Path) -> None:
    settings = load_settings()
    bus = EmbeddedBus()
    cell = a_cell(settings_env)
    producer = bus.producer()
    messages = {
        "ok-1": prompt("ok-1", "coffee near me", cell, user="u0001"),
        "empty": prompt("empty", "   ", cell),
        "long": prompt("long", "x" * 500, cell),
        "cell": prompt("cell", "find a gym", "MI-0000"),
        "adapter": prompt("adapter", "find a gym", cell, adapter="nope"),
        "utf8": b"\xff\xfe not utf-8",
        "json": b"{not json",
        "field": json.dumps({"request_id": "field", "text": "hi"}).encode(),
        "ok-2": prompt("ok-2", "any pharmacy around here?", {"cell": cell}, ts="2024-01-01T20:00:00Z"),
    }
    for value in messages.values():
        producer.send(settings.topics.prompts, value)
    _, stats = serve(bus, settings)
    assert (stats["messages"], stats["requests"], stats["answered_at_edge"] + stats["escalated"], stats["errors"]) == (9, 9, 2, 7)
    assert stats["dead_letters"] == 7 and stats["handler_errors"] == 0

    records = outcomes(bus, settings, len(messages))
    by_id = {r.get("request_id"): r for r in records}
    # the base model has no completion adapter: it generates freely, vouches for nothing, and escalates
    assert by_id["ok-1"]["served_by"] == by_id["ok-2"]["served_by"] == "cloud-request"
    assert "cell" not in by_id["ok-1"] and "user" not in by_id["ok-1"] and by_id["ok-1"]["edge"] == settings.llm.edge_site
    reasons = {rid: by_id[rid]["reason"] for rid in ("empty", "long", "cell", "adapter", "field")}
    assert "empty prompt" in reasons["empty"]
    assert "prompt too long: 500 characters" in reasons["long"]
    assert "unknown cell 'MI-0000'" in reasons["cell"]
    assert "adapter 'nope' is not loaded" in reasons["adapter"]
    assert "location" in reasons["field"]
    anonymous = [r for r in records if r.get("request_id") is None]
    assert len(anonymous) == 2 and all(r["status"] == "error" and r["reason"] for r in anonymous)  # the runtime's decoding reasons

    # every unanswerable message is also on the dead-letter topic, whole, with the reason in headers
    dead = read_all(bus, settings.llm.dead_letter_topic, "dlq-reader", 7)
    assert sorted(m.value for m in dead) == sorted(v for k, v in messages.items() if not k.startswith("ok-"))
    assert sorted(m.header(REASON).decode() for m in dead) == sorted(r["reason"] for r in records if r["status"] == "error")
    assert {m.header(SERVICE) for m in dead} == {b"edge"}
    assert all(m.header(ORIGIN).startswith(settings.topics.prompts.encode()) for m in dead)

    # everything answered was committed: the group has nothing left to read
    again = bus.consumer([settings.topics.prompts], settings.llm.group_id)
    assert again.poll(100, 0.2) == []


def test_hostile_messages_get_an_error_reply_and_a_dead_letter_between_answered_prompts(settings_env: Path) -> None:
    settings = load_settings()
    bus = EmbeddedBus(default_partitions=1)
    cell = a_cell(settings_env)
    hostile = {
        "null": b"",
        "utf8": b'{"request_id": "bad-utf8", "text": "caf\xe9", "location": "cell"}',
        "deep": b"[" * 100_000,
        "ts": prompt("far-ts", "coffee near me", cell, ts="9999-12-31T23:59:59-05:00"),
    }
    producer = bus.producer()
    sent: list[tuple[str, bytes]] = []
    for i, (name, value) in enumerate(hostile.items()):
        sent.append((f"good-{i}", prompt(f"good-{i}", "coffee near me", cell)))
        sent.append((name, value))
    sent.append(("good-last", prompt("good-last", "any pharmacy around here?", cell)))
    for name, value in sent:
        producer.send(settings.topics.prompts, value, key=name.encode())
    _, stats = serve(bus, settings)
    assert (stats["requests"], stats["answered_at_edge"] + stats["escalated"], stats["errors"], stats["dead_letters"]) == (9, 5, 4, 4)

    records = outcomes(bus, settings, len(sent))
    by_id = {r.get("request_id"): r for r in records}
    assert all(by_id[name]["status"] == "ok" for name, _ in sent if name not in hostile)
    errors = [r for r in records if r["status"] == "error"]
    assert len(errors) == len(hostile) and all(r["reason"] for r in errors)
    assert by_id["far-ts"]["status"] == "error"  # valid JSON: the requester is told

    dead = read_all(bus, settings.llm.dead_letter_topic, "dlq-reader", len(hostile))
    assert [m.value for m in dead] == list(hostile.values())
    assert sorted(m.header(REASON).decode() for m in dead) == sorted(r["reason"] for r in errors)


@pytest.mark.kafka
def test_a_prompt_round_trips_through_kafka(settings_env: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nm_toolkit.bus import bus_from_settings

    monkeypatch.setenv("NMT_BUS__KIND", "kafka")
    monkeypatch.setenv("NMT_BUS__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("NMT_TOPICS__PROMPTS", "llm-test.prompts")
    monkeypatch.setenv("NMT_TOPICS__ANSWERS", "llm-test.answers")
    monkeypatch.setenv("NMT_TOPICS__CLOUD_REQUESTS", "llm-test.cloud")
    monkeypatch.setenv("NMT_LLM__CONFIDENCE_THRESHOLD", "0")
    monkeypatch.setenv("NMT_LLM__GROUP_ID", "llm-test-edge")
    monkeypatch.setenv("NMT_LLM__DEAD_LETTER_TOPIC", "llm-test.prompts.dlq")
    settings = load_settings()
    bus = bus_from_settings(settings)
    runner = StreamRunner(bus, service_for(settings))
    worker = threading.Thread(target=runner.run, args=(threading.Event(),), kwargs={"max_messages": 2, "idle_exit_s": 60})
    worker.start()
    producer = bus.producer()
    producer.send(settings.topics.prompts, prompt("kafka-1", "find a cafe nearby", a_cell(settings_env)), key=b"kafka-1")
    producer.send(settings.topics.prompts, None, key=b"kafka-2")  # type: ignore[arg-type]  # a null value (tombstone)
    producer.flush()
    records = replies(bus, settings.topics.answers, "llm-test-reader", 1)
    escalated = [r for r in replies(bus, settings.topics.cloud_requests, "llm-test-cloud-reader", 3, timeout_s=5) if r["kind"] == "request"]
    dead = read_all(bus, settings.llm.dead_letter_topic, "llm-test-dlq-reader", 1)
    worker.join(timeout=60)
    producer.close()
    bus.close()
    assert not worker.is_alive()
    assert [r["request_id"] for r in escalated] == ["kafka-1"] and escalated[0]["text"]
    [error] = records
    assert error["status"] == "error" and error["reason"]
    assert [(m.key, m.value, m.header(REASON).decode()) for m in dead] == [(b"kafka-2", b"", error["reason"])]


def test_cli_dataset_finetune_and_complete(settings_env: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["llm", "dataset", "-o", str(tmp_path / "data"), "--train", "24", "--test", "8", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [
        "model", "finetune", "--base", str(settings_env / "edge"), "--task", "prompt_completion",
        "--data", str(tmp_path / "data" / "train.jsonl"), "--adapter", "pc", "--epochs", "0.5", "--rank", "4", "--json",
    ])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["model", "adapters", "--json"])
    assert [a["adapter"] for a in json.loads(listed.stdout)] == ["pc"]
    result = runner.invoke(app, ["llm", "complete", "coffee near me", "--location", a_cell(settings_env), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["adapter"] == "pc" and out["bytes_cloud_only"] > 0
    missing = runner.invoke(app, ["model", "finetune", "--base", str(tmp_path / "none"), "--task", "t",
                                  "--data", str(tmp_path / "data" / "train.jsonl"), "--adapter", "x"])
    assert missing.exit_code != 0 and "nmt model init" in str(missing.exception)


def test_cli_serve_runs_the_service_with_metrics(settings_env: Path) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = CliRunner().invoke(app, ["llm", "serve", "--idle-exit", "0.5", "--metrics-port", "0", "--json"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output[result.output.index("{"):])
    assert stats["requests"] == stats["messages"] == 0 and stats["dead_letters"] == 0


def test_requests_that_waited_past_the_timeout_are_answered_with_an_error(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_LLM__REQUEST_TIMEOUT_S", "0.05")
    settings = load_settings()
    bus = EmbeddedBus()
    producer = bus.producer()
    producer.send(settings.topics.prompts, prompt("late", "coffee near me", a_cell(settings_env)))
    time.sleep(0.2)
    _, stats = serve(bus, settings)
    assert (stats["escalated"], stats["errors"], stats["dead_letters"]) == (0, 1, 1)
    [record] = outcomes(bus, settings, 1)
    assert record["request_id"] == "late" and record["reason"].startswith("timed out")
    [letter] = read_all(bus, settings.llm.dead_letter_topic, "dlq-reader", 1)
    assert letter.header(REASON).decode().startswith("timed out")


def test_a_failed_generation_answers_its_batch_with_errors_and_serving_goes_on(settings_env: Path) -> None:
    settings = load_settings()
    bus = EmbeddedBus(default_partitions=1)
    cell = a_cell(settings_env)
    service = service_for(settings)
    real = service.completer.complete
    calls = []

    def flaky(prepared: list, seed: int | None = None) -> list:
        calls.append(len(prepared))
        if len(calls) == 1:
            raise RuntimeError("out of memory on the edge")
        return real(prepared, seed)

    service.completer.complete = flaky  # type: ignore[method-assign]
    producer = bus.producer()
    for i in range(3):
        producer.send(settings.topics.prompts, prompt(f"r{i}", "coffee near me", cell))
    runner = StreamRunner(bus, service)
    assert runner.step(timeout_s=1.0) == 3  # one batch: generation fails for all three
    producer.send(settings.topics.prompts, prompt("r3", "coffee near me", cell))
    run_until_idle([runner])
    stats = runner.stats_dict()
    runner.close()
    assert calls == [3, 1]
    assert (stats["escalated"], stats["errors"], stats["generation_failures"], stats["dead_letters"]) == (1, 3, 1, 3)
    records = outcomes(bus, settings, 4)
    assert sorted((r["request_id"], r["status"]) for r in records) == [("r0", "error"), ("r1", "error"), ("r2", "error"), ("r3", "ok")]
    assert all("generation failed: RuntimeError: out of memory" in r["reason"] for r in records if r["status"] == "error")


def test_an_int8_edge_model_serves_the_same_way(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_LLM__QUANTIZE_EDGE", "true")
    settings = load_settings()
    bus = EmbeddedBus()
    producer = bus.producer()
    cell = a_cell(settings_env)
    producer.send(settings.topics.prompts, prompt("q-1", "coffee near me", cell))
    producer.send(settings.topics.prompts, prompt("q-2", "coffee near me", cell, deadline_s=0.001))
    runner, stats = serve(bus, settings)
    model = runner.service.completer.lm.model
    assert any(type(m).__module__.startswith("torch.ao") for m in model.modules())  # int8 base layers, under any adapters
    assert (stats["escalated"], stats["answered_at_edge"], stats["errors"]) == (1, 1, 0)


def test_the_edge_reports_its_load_as_telemetry_the_collector_windows(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.service import telemetry_collector
    from nm_toolkit.schemas import SeriesPoint

    monkeypatch.setenv("NMT_LLM__LOAD_INTERVAL_S", "0.001")
    monkeypatch.setenv("NMT_COLLECTOR__WINDOW_SECONDS", "60")
    settings = load_settings()
    bus = EmbeddedBus()
    producer = bus.producer()
    cell = a_cell(settings_env)
    for i in range(4):
        producer.send(settings.topics.prompts, prompt(f"l-{i}", "coffee near me", cell, **({"deadline_s": 0.001} if i % 2 else {})))
    runner = StreamRunner(bus, service_for(settings))
    run_until_idle([runner])
    runner.finish()
    runner.close()
    reports = [json.loads(m.value)["records"] for m in bus.messages(settings.topics.telemetry)]
    records = [r for report in reports for r in report]
    metrics = {r["metric"] for r in records}
    assert {"prompts", "escalated", "answered_at_edge", "edge_to_cloud_bytes", "queue_delay_ms"} <= metrics
    assert {r["source"] for r in records} == {settings.llm.edge_site}
    total = {m: sum(r["value"] for r in records if r["metric"] == m) for m in metrics}
    assert total["prompts"] == 4 and total["escalated"] == total["answered_at_edge"] == 2
    assert total["edge_to_cloud_bytes"] > 0

    collector = StreamRunner(bus, telemetry_collector(settings, bus))
    run_until_idle([collector])
    collector.service.close_all_windows(collector.emitter)
    collector.close()
    assert collector.service.counters.dead_letter_messages == 0
    series = {SeriesPoint.model_validate_json(m.value).series_id for m in bus.messages(settings.topics.series)}
    assert f"{settings.llm.edge_site}|prompts" in series  # the name edge autoscaling reads
