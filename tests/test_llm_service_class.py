"""A prompt's service class from the edge model's own output, with the keyword rules as fallback,
and the edge service publishing each prompt's service intent and demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from intent.service import intent_runners
from intent.user import service_class as keyword_class
from nm_toolkit.bus.embedded import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import load_settings
from nm_toolkit.llm.completion_data import TRAIN_FRAMES
from nm_toolkit.llm.defaults import SIZES, build_edge, city_task
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.lora import AdapterRegistry, LoraTrainConfig
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.service_class import (
    _ACTIVITIES,
    _FRAMES,
    CLASSES,
    ProbeConfig,
    ServiceClassifier,
    ServiceClassProbe,
    classifier_input,
    evaluate_classifier,
    fit_service_class_probe,
    labelled_prompts,
)


@pytest.fixture(scope="module")
def edge_with_classifier(tiny_llms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny edge base's adapters: a completion adapter, and the service-class probe next to it."""
    root = tmp_path_factory.mktemp("edge-classes")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    registry, lora = AdapterRegistry(root / "adapters"), LoraTrainConfig(rank=2, alpha=4, epochs=0.2, batch_size=8)
    fit_service_class_probe(tiny_llms / "edge", root / "adapters", ProbeConfig(examples=70))
    build_edge(tiny_llms / "edge", registry, city_task(0, 16)[1], SIZES["tiny"].edge_init, lora)
    torch.set_num_threads(threads)
    return root


def test_held_out_prompts_share_no_activity_and_no_frame_with_training_and_every_class_is_there() -> None:
    train, held_out = labelled_prompts(400, "train"), labelled_prompts(400, "held_out")
    assert {k for _, k in train} == {k for _, k in held_out} == set(CLASSES)
    assert not {t for t, _ in train} & {t for t, _ in held_out}
    for kind, (seen, unseen) in _ACTIVITIES.items():
        assert not set(seen) & set(unseen), kind
    assert not set(_FRAMES[0]) & set(_FRAMES[1])
    # the city task's place requests are web lookups; requests for nothing the network carries are None
    assert any(k == "web" and any(f.split("{")[0] and t.startswith(f.split("{")[0]) for f in TRAIN_FRAMES) for t, k in train)
    assert ("tell me a joke", None) in train or any(k is None for _, k in train)
    # compositions the keyword rules get wrong are in the training set on purpose
    assert any(t.endswith("download the new game") and k == "bulk_download" for t, k in labelled_prompts(2000, "train"))
    assert keyword_class("download the new game") == "gaming"


def test_the_model_reads_the_words_never_the_location() -> None:
    assert classifier_input("  download   the new game ") == "user request: download the new game"
    long = classifier_input("stream " * 500)  # the edge's longest prompts still fit its positions
    assert len(long) < 500 and long.startswith("user request: stream stream")


def test_without_the_adapter_the_keyword_rules_decide() -> None:
    choices = ServiceClassifier(None).classify(["watch the match live", "hello"])
    assert [(c.service_class, c.source, c.confidence) for c in choices] == [("video", "keywords", None), (None, "keywords", None)]


def test_the_model_decides_when_confident_and_the_rules_take_over_below_the_threshold(tiny_llms: Path, edge_with_classifier: Path) -> None:
    lm = AdapterLM.load(tiny_llms / "edge", AdapterRegistry(edge_with_classifier / "adapters"))  # adapters loaded: the probe reads the base
    probe = ServiceClassProbe.load(edge_with_classifier / "adapters")
    assert probe is not None and probe.facts["examples"] == 70 and probe.coef.shape == (len(CLASSES), lm.model.config.hidden_size)
    texts = ["watch the match live", "tell me a joke", "upload a video to youtube"]
    trusting = ServiceClassifier(lm, probe, min_confidence=0.0).classify(texts)
    assert all(c.source == "edge_model" and c.service_class == c.model_class in CLASSES for c in trusting)
    assert all(0 < c.confidence <= 1 for c in trusting)  # type: ignore[operator]
    assert [c.model_class for c in ServiceClassifier(AdapterLM.load(tiny_llms / "edge"), probe, 0.0).classify(texts)] == [c.model_class for c in trusting]
    doubting = ServiceClassifier(lm, probe, min_confidence=1.0).classify(texts)
    # the rules decide where they find a class; where they find none the model's answer stands
    assert [(c.service_class, c.source) for c in doubting[::2]] == [("video", "keywords"), ("video", "keywords")]
    assert doubting[1].source == "edge_model" and doubting[1].service_class == trusting[1].service_class
    report = evaluate_classifier(ServiceClassifier(lm, probe, min_confidence=1.0), labelled_prompts(24, "held_out"))
    assert report.examples == 24 and report.keywords == pytest.approx(sum(keyword_class(t) == k for t, k in labelled_prompts(24, "held_out")) / 24)


@pytest.fixture()
def edge_env(tiny_llms: Path, edge_with_classifier: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings of an edge service on the tiny models with both adapters; returns a cell of its city."""
    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(tiny_llms / "edge"))
    monkeypatch.setenv("NMT_LLM__CONTEXT_STORE", str(tiny_llms / "context.json"))
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(edge_with_classifier / "adapters"))
    monkeypatch.setenv("NMT_LLM__MAX_NEW_TOKENS", "4")
    return sorted(json.loads((tiny_llms / "context.json").read_text())["cells"], key=lambda c: c["cell"])[0]["cell"]


def test_the_edge_service_publishes_each_prompts_service_intent_and_demand_keyed_by_cell(edge_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_LLM__SERVICE_CLASS_CONFIDENCE", "1.0")  # the rules decide where they can: a known outcome
    settings = load_settings()
    cell = edge_env
    bus = EmbeddedBus()
    producer = bus.producer()
    texts = {"r1": "watch the match live", "r2": "download a large file", "r3": "hello", "r4": "stream a movie in 4k at 25 mbps"}
    for rid, text in texts.items():
        producer.send(settings.topics.prompts, json.dumps({"request_id": rid, "text": text, "location": cell, "ts": "2024-01-01T10:00:00Z"}).encode())
    edge = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
    intents = intent_runners(settings, bus, extractor=object())  # type: ignore[arg-type]  (no operator text here)
    run_until_idle([edge, *intents.runners])

    results = {r["request_id"]: r for r in (json.loads(m.value) for m in bus.messages(settings.topics.intent_results))}
    assert set(results) == set(texts)  # one answer per prompt: the intent service left the prompts to the edge
    assert {rid: r["intent"].get("service_class") for rid, r in results.items()} == {
        "r1": "video", "r2": "bulk_download", "r3": results["r3"]["intent"].get("service_class"), "r4": "video"
    }  # fmt: skip
    assert results["r1"]["inferred_by"] == "keywords" and results["r3"]["inferred_by"] == "edge_model"
    assert results["r4"]["intent"]["bandwidth_mbps"] == 25.0
    demand = [(m.key, json.loads(m.value)) for m in bus.messages(settings.intent.demand_topic)]
    assert {key for key, _ in demand} == {cell.encode()}
    metrics = sorted(r["metric"] for _, batch in demand for r in batch["records"])
    inferred = [r["intent"]["service_class"] for r in results.values() if r["status"] == "inferred"]
    assert metrics == sorted(f"demand.{kind}.{measure}" for kind in inferred for measure in ("requests", "mbps"))
    stats = edge.stats_dict()
    assert stats["classified_by_keywords"] == 3 and stats["classified_by_model"] == 1
    assert stats["service_intents"] == sum(r["status"] == "inferred" for r in results.values())
    assert intents.service.counters.messages == 0


def test_with_keyword_demand_the_edge_publishes_no_intents_and_the_intent_service_reads_the_prompts(
    edge_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NMT_INTENT__USER_DEMAND", "keywords")
    settings = load_settings()
    cell = edge_env
    bus = EmbeddedBus()
    bus.producer().send(settings.topics.prompts, json.dumps({"request_id": "r1", "text": "watch the match live", "location": cell}).encode())
    edge = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
    intents = intent_runners(settings, bus, extractor=object())  # type: ignore[arg-type]
    run_until_idle([edge, *intents.runners])
    results = [json.loads(m.value) for m in bus.messages(settings.topics.intent_results)]
    assert [(r["request_id"], r["inferred_by"]) for r in results] == [("r1", "keywords")]
    assert edge.stats_dict()["service_intents"] == 0 and intents.service.counters.user_intents == 1
