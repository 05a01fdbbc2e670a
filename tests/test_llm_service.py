"""The prompt service on the embedded bus and the real Kafka broker, and the CLI around it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.base import Bus
from nm_toolkit.cli import app
from nm_toolkit.config import load_settings
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.deployment import prompt_service
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised

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


def read_all(bus: Bus, topic: str, group: str, expected: int, timeout_s: float = 60.0) -> list[dict]:
    consumer = bus.consumer([topic], group)
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += [json.loads(m.value) for m in consumer.poll(100, 0.5)]
    consumer.close()
    return out


def test_bad_prompts_become_error_records_and_the_service_keeps_serving(settings_env: Path) -> None:
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
    service = prompt_service(settings, bus)
    stats = service.run(max_requests=len(messages), idle_exit_s=5)
    assert (stats.requests, stats.completions, stats.errors) == (9, 2, 7)

    records = read_all(bus, settings.topics.completions, "reader", len(messages))
    by_id = {r.get("request_id"): r for r in records}
    assert by_id["ok-1"]["status"] == by_id["ok-2"]["status"] == "ok"
    assert 0 < by_id["ok-1"]["new_tokens"] <= 6 and by_id["ok-1"]["adapter"] == "__base__"
    reasons = {rid: by_id[rid]["reason"] for rid in ("empty", "long", "cell", "adapter", "field")}
    assert "empty prompt" in reasons["empty"]
    assert "prompt too long: 500 characters" in reasons["long"]
    assert "unknown cell 'MI-0000'" in reasons["cell"]
    assert "adapter 'nope' is not loaded" in reasons["adapter"]
    assert "location" in reasons["field"]
    anonymous = [r for r in records if r.get("request_id") is None]
    assert sorted(r["reason"].split(":")[0] for r in anonymous) == ["undecodable prompt", "undecodable prompt"]
    assert all(r["status"] == "error" and r["original_b64"] for r in anonymous)
    # everything answered was committed: the group has nothing left to read
    again = bus.consumer([settings.topics.prompts], settings.llm.group_id)
    assert again.poll(100, 0.2) == []


@pytest.mark.kafka
def test_a_prompt_round_trips_through_kafka(settings_env: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nm_toolkit.bus import bus_from_settings

    monkeypatch.setenv("NMT_BUS__KIND", "kafka")
    monkeypatch.setenv("NMT_BUS__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("NMT_TOPICS__PROMPTS", "llm-test.prompts")
    monkeypatch.setenv("NMT_TOPICS__COMPLETIONS", "llm-test.completions")
    settings = load_settings()
    bus = bus_from_settings(settings)
    bus.create_topics([settings.topics.prompts, settings.topics.completions])
    service = prompt_service(settings, bus)
    worker = threading.Thread(target=service.run, kwargs={"max_requests": 2, "idle_exit_s": 60})
    worker.start()
    producer = bus.producer()
    producer.send(settings.topics.prompts, prompt("kafka-1", "find a cafe nearby", a_cell(settings_env)), key=b"kafka-1")
    producer.send(settings.topics.prompts, b"", key=b"kafka-2")
    producer.flush()
    records = read_all(bus, settings.topics.completions, "llm-test-reader", 2)
    worker.join(timeout=60)
    producer.close()
    bus.close()
    assert not worker.is_alive()
    assert {r.get("request_id") for r in records} == {"kafka-1", None}
    ok = next(r for r in records if r.get("request_id") == "kafka-1")
    assert ok["status"] == "ok" and isinstance(ok["completion"], str)


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
    assert [a["adapter"] for a in json.loads(listed.output)] == ["pc"]
    result = runner.invoke(app, ["llm", "complete", "coffee near me", "--location", a_cell(settings_env), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["adapter"] == "pc" and out["bytes_cloud_only"] > 0
    missing = runner.invoke(app, ["model", "finetune", "--base", str(tmp_path / "none"), "--task", "t",
                                  "--data", str(tmp_path / "data" / "train.jsonl"), "--adapter", "x"])
    assert missing.exit_code != 0 and "nmt model init" in str(missing.exception)


def test_requests_that_waited_past_the_timeout_are_answered_with_an_error(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_LLM__REQUEST_TIMEOUT_S", "0.05")
    settings = load_settings()
    bus = EmbeddedBus()
    producer = bus.producer()
    producer.send(settings.topics.prompts, prompt("late", "coffee near me", a_cell(settings_env)))
    time.sleep(0.2)
    stats = prompt_service(settings, bus).run(max_requests=1, idle_exit_s=5)
    assert (stats.completions, stats.errors) == (0, 1)
    [record] = read_all(bus, settings.topics.completions, "reader", 1)
    assert record["request_id"] == "late" and record["reason"].startswith("timed out")
