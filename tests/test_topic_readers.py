"""No dead ends: every topic a service of the running system writes is read, by another service or
(its dead letters, late records, answers and intent results: outputs for people and applications)
by an ``nmt`` command. Built from the settings, the way ``nmt ... serve`` builds each service."""

from __future__ import annotations

from pathlib import Path

from collectors.service import telemetry_collector
from forecasting.service import forecast_service
from intent.data import load_intents
from intent.service import intent_runners
from intent.tagger import SklearnIntentTagger
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamService
from nm_toolkit.config import load_settings
from nm_toolkit.controller.runner import decision_service
from nm_toolkit.llm.cloud_service import cloud_service
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.netgpt import CloudResponder, EdgeCompleter
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.supervisor import edge_supervisor

DATA = Path(__file__).parent / "data"


def test_every_topic_written_is_read(tiny_llms: Path, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, controller={"adapter": "kafka"}, llm={"load_interval_s": 60})
    bus = EmbeddedBus()
    intents = intent_runners(settings, bus, extractor=SklearnIntentTagger().fit(load_intents(DATA / "nile_intents_slice.json")))
    edge_lm = AdapterLM.load(tiny_llms / "edge")
    services: list[StreamService] = [
        telemetry_collector(settings, bus),
        forecast_service(settings, bus),
        intents.service,
        intents.collector,
        decision_service(settings, adapters=[]),
        edge_service(settings, EdgeCompleter(edge_lm, ContextStore.load(tiny_llms / "context.json")), AdapterRegistry(tmp_path / "adapters")),
        cloud_service(settings, CloudResponder(AdapterLM.load(tiny_llms / "cloud"))),
        edge_supervisor(settings),
    ]
    topics = settings.topics
    read_by = {t.name: s.name for s in services for t in s.inputs}
    for_people = {
        **{topic: "nmt dead-letters tail" for topic in settings.dead_letter_topics().values()},
        topics.answers: "nmt llm ask",
        topics.intent_results: "nmt intent submit --wait",
        topics.dead_letter_replays: "nmt dead-letters replay",
    }
    written = {topic: s.name for s in services for topic in [*s.outputs, s.dead_letter_topic]}
    unread = {topic: writer for topic, writer in written.items() if topic not in read_by and topic not in for_people}
    assert unread == {}, f"written but read by nothing: {unread}"
    # ...and every topic of the settings is part of the loop
    declared = set(topics.model_dump().values())
    assert declared <= set(written) | set(read_by) | set(for_people), declared - set(written) - set(read_by)
