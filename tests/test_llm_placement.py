"""Adapter placement at the edge: the pure bookkeeping, and the edge service carrying out
place_adapter decisions between batches within its budget, observed in its own counters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import load_settings
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import EdgeCompleter
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.placement import AdapterPlacement
from nm_toolkit.llm.service import edge_service
from nm_toolkit.schemas import PlaceAdapter


def test_placement_loads_what_is_placed_and_evicts_the_least_recently_used() -> None:
    placement = AdapterPlacement(budget=2)
    placement.used("old", 1.0)
    placement.used("recent", 5.0)
    placement.place("video", until=100.0)
    plan = placement.plan(loaded={"old", "recent"}, available={"old", "recent", "video"}, now=10.0)
    assert plan.load == ("video",) and plan.unload == ("old",)
    placement.place("missing", until=200.0)  # not in the registry: ignored, nothing evicted for it
    assert placement.plan({"recent", "video"}, {"old", "recent", "video"}, now=10.0).unload == ()
    # more placed than the budget holds: the longest-lasting placements win
    placement.place("maps", until=300.0)
    plan = placement.plan({"recent", "video"}, {"recent", "video", "maps"}, now=10.0)
    assert plan.load == ("maps",) and plan.unload == ("recent",)
    assert placement.wanted(now=150.0) == ["maps", "missing"]  # video's placement expired
    with pytest.raises(ValueError):
        AdapterPlacement(budget=0)


@pytest.fixture(scope="module")
def registry(tiny_llms: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterRegistry:
    store = AdapterRegistry(tmp_path_factory.mktemp("adapters"))
    pairs = [(f"request: thing {i}\nprompt:", f" answer {i}") for i in range(8)]
    for name in ("video", "maps"):
        model, tokenizer = load_causal_lm(tiny_llms / "edge")
        tuner = LoraFineTuner(LoraTrainConfig(rank=4, alpha=8, epochs=0.5, batch_size=8)).fit(model, tokenizer, pairs, name)
        store.save(tuner.model_, AdapterCard(name, "prompt_completion", str(tiny_llms / "edge")), tuner.losses_)
    return store


def decision(adapter: str, target: str = "edge-0", **extra: object) -> bytes:
    return PlaceAdapter(
        idempotency_key=f"place-{adapter}-{target}", policy="adapter_placement", target=target, adapter=adapter,
        reason="forecast popularity", created_at=datetime.now(UTC), **extra,
    ).model_dump_json().encode()  # fmt: skip


def test_the_edge_carries_out_placements_between_batches_within_its_budget(tiny_llms: Path, registry: AdapterRegistry) -> None:
    settings = load_settings(llm={"adapter_budget": 1, "probe_interval_s": 0, "load_interval_s": 0, "max_new_tokens": 3})
    lm = AdapterLM.load(tiny_llms / "edge", registry, adapters=[])  # starts with no adapter
    service = edge_service(settings, EdgeCompleter(lm, ContextStore.load(tiny_llms / "context.json")), registry)
    bus = EmbeddedBus()
    producer = bus.producer()
    cell = json.loads((tiny_llms / "context.json").read_text())["cells"][0]["cell"]
    producer.send(settings.topics.decisions, decision("video"))
    producer.send(settings.topics.decisions, decision("maps", target="edge-9"))  # another site's
    producer.send(settings.topics.decisions, decision("maps", dry_run=True))  # not to be carried out
    producer.send(settings.topics.decisions, b"{not a decision")
    runner = StreamRunner(bus, service)
    run_until_idle([runner])
    assert set(lm.cards) == {"video"} and service.counters.adapter_loads == 1
    assert len(bus.messages(settings.llm.dead_letter_topic)) == 1

    prompt = {"request_id": "r-1", "text": "coffee near me", "location": cell, "adapter": "video", "deadline_s": 0.001}
    producer.send(settings.topics.prompts, json.dumps(prompt).encode())
    producer.send(settings.topics.decisions, decision("maps", ttl_seconds=7200))  # outlasts video's placement: evicts it
    run_until_idle([runner])
    stats = runner.stats_dict()
    runner.close()
    assert set(lm.cards) == {"maps"}
    assert (stats["adapter_loads"], stats["adapter_unloads"], stats["adapters_loaded"], stats["placement_failures"]) == (2, 1, 1, 0)
    [answer] = [json.loads(m.value) for m in bus.messages(settings.topics.answers)]
    assert answer["request_id"] == "r-1" and answer["status"] == "ok" and answer["adapter"] == "video"  # served before the swap


def test_every_replica_of_a_site_carries_out_its_placements_on_the_broker(
    tiny_llms: Path, registry: AdapterRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Decisions and probe echoes are read by every replica (outside the work-sharing group), so
    a placement reaches all the site's replicas, not the one that owns a partition."""
    import time
    import uuid

    from nm_toolkit.bus.kafka import KafkaBus

    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        state_dir=tmp_path, bus={"kind": "kafka", "bootstrap_servers": kafka_bootstrap},
        topics={t: f"{tag}.{t}" for t in ("prompts", "answers", "cloud_requests", "cloud_status", "decisions", "telemetry", "intent_results")},
        llm={"adapter_budget": 1, "probe_interval_s": 0, "load_interval_s": 0, "group_id": f"edge-{tag}", "dead_letter_topic": f"{tag}.dlq"},
        intent={"user_demand": "keywords"},
    )  # fmt: skip
    bus = KafkaBus(kafka_bootstrap, compacted_topics=settings.topics.tables())
    bus.create_topics([settings.topics.prompts, settings.topics.decisions], partitions=4)
    lms = [AdapterLM.load(tiny_llms / "edge", registry, adapters=[]) for _ in range(2)]
    runners = [StreamRunner(bus, edge_service(settings, EdgeCompleter(lm, ContextStore.load(tiny_llms / "context.json")), registry)) for lm in lms]
    producer = bus.producer()
    producer.send(settings.topics.decisions, decision("maps"), b"place-maps-edge-0")
    producer.flush()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and not all(set(lm.cards) == {"maps"} for lm in lms):
            for runner in runners:
                runner.step(timeout_s=0.2)
    finally:
        for runner in runners:
            runner.close()
    assert [set(lm.cards) for lm in lms] == [{"maps"}, {"maps"}]
    assert [r.service.counters.adapter_loads for r in runners] == [1, 1]


def test_a_request_for_an_adapter_the_site_has_but_not_loaded_loads_it_within_the_budget(tiny_llms: Path, registry: AdapterRegistry) -> None:
    settings = load_settings(llm={"adapter_budget": 1, "probe_interval_s": 0, "load_interval_s": 0, "max_new_tokens": 3})
    lm = AdapterLM.load(tiny_llms / "edge", registry, adapters=["video"])
    service = edge_service(settings, EdgeCompleter(lm, ContextStore.load(tiny_llms / "context.json")), registry)
    bus = EmbeddedBus()
    cell = json.loads((tiny_llms / "context.json").read_text())["cells"][0]["cell"]
    producer = bus.producer()
    for i, adapter in enumerate(("maps", "nowhere")):
        producer.send(settings.topics.prompts, json.dumps({"request_id": f"r-{i}", "text": "coffee near me", "location": cell, "adapter": adapter}).encode())
    runner = StreamRunner(bus, service)
    run_until_idle([runner])
    runner.close()
    answers = {a["request_id"]: a for a in (json.loads(m.value) for m in bus.messages(settings.topics.answers))}
    escalated = {json.loads(m.value)["request_id"] for m in bus.messages(settings.topics.cloud_requests)}
    assert ("r-0" in answers and answers["r-0"]["status"] == "ok") or "r-0" in escalated  # completed with maps, wherever answered
    assert answers["r-1"]["status"] == "error" and "not loaded" in answers["r-1"]["reason"]  # the site has no such adapter
    assert set(lm.cards) == {"maps"}  # the budget of one: video made room
    counters = service.counters
    assert (counters.adapter_misses, counters.adapter_unloads, counters.adapters_loaded) == (1, 1, 1)
    assert counters.adapter_miss_load_ms > 0


def test_an_edge_starts_with_the_completion_adapter_first_within_its_budget() -> None:
    from nm_toolkit.llm.lora import AdapterCard
    from nm_toolkit.llm.placement import startup_adapters

    cards = [AdapterCard("trend", "trend_forecast", "base"), AdapterCard("completion", "prompt_completion", "base"), AdapterCard("x", "other", "base")]
    assert startup_adapters(cards, 1, "prompt_completion") == ["completion"]
    assert startup_adapters(cards, 2, "prompt_completion") == ["completion", "trend"]
