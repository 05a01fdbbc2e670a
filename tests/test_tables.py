"""Table topics (intents in force, forecasts, decisions): compacted on the broker, retracted with a
tombstone, and never re-stated by a duplicate intent."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from intent.data import load_intents
from intent.service import IntentRecord, intent_runners
from intent.tagger import SklearnIntentTagger
from nm_toolkit.bus import EmbeddedBus, bus_from_settings
from nm_toolkit.bus.checkpoints import CheckpointStore
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import load_settings
from nm_toolkit.controller.runner import DecisionService, decision_service
from policies.intent_qos_acl import IntentQosAclPolicy
from policies.intents import NetworkIntent

SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"


@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return SklearnIntentTagger().fit(load_intents(SLICE)).save_pretrained(tmp_path_factory.mktemp("extractor"))


def _topic_config(admin: KafkaAdminClient, topic: str, name: str) -> str:
    (described,) = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="All").values()
    return described[topic][name]["value"]


def test_table_topics_are_created_compacted_and_old_ones_are_switched(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {"forecasts": f"{tag}.forecasts", "intents": f"{tag}.intents", "decisions": f"{tag}.decisions", "series": f"{tag}.series"}
    settings = load_settings(bus={"kind": "kafka", "bootstrap_servers": kafka_bootstrap}, topics=topics, state_dir=tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        # A deployment from before: the intents table exists with the default (delete) policy.
        admin.create_topics([NewTopic(topics["intents"], 1, 1)])
        bus_from_settings(settings).create_topics(topics.values())
        expected = {"forecasts": "compact", "intents": "compact", "decisions": "compact", "series": "delete"}
        deadline = time.monotonic() + 60  # a changed topic config reaches every broker's metadata soon, not at once
        while (found := {name: _topic_config(admin, topics[name], "cleanup.policy") for name in topics}) != expected:
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
    finally:
        admin.close()


def test_an_intent_in_force_outlives_the_old_segments_and_a_tombstone_retracts_one(kafka_bootstrap: str, tmp_path: Path) -> None:
    """With segments that roll every 100 ms and a retention of one second, a delete-policy topic
    would lose the intent; the compacted table keeps the latest value of every key for good."""
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(bus={"kind": "kafka", "bootstrap_servers": kafka_bootstrap}, topics={"intents": f"{tag}.intents"}, state_dir=tmp_path)
    topic = settings.topics.intents
    bus = bus_from_settings(settings)
    bus.create_topics([topic], partitions=1)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    fast = {"segment.ms": "100", "retention.ms": "1000", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, fast)], incremental=True)
    admin.close()
    in_force = NetworkIntent(id="keep", tenant="default", target="servers", action="block", text="block the servers")
    gone = in_force.model_copy(update={"id": "gone"})
    producer = bus.producer()
    producer.send(topic, in_force.model_dump_json().encode(), b"keep")
    producer.send(topic, gone.model_dump_json().encode(), b"gone")
    producer.send(topic, None, b"gone")  # retracted
    deadline = time.monotonic() + 240
    table: dict[bytes, bytes] = {}
    rewritten = False
    while time.monotonic() < deadline and not rewritten:
        # Updates of another key keep rolling segments, so the cleaner has something to clean.
        for i in range(20):
            producer.send(topic, NetworkIntent(**{**in_force.model_dump(), "id": "churn", "text": f"v{i}"}).model_dump_json().encode(), b"churn")
        producer.flush()
        time.sleep(2)
        consumer = bus.consumer([topic], f"reader-{uuid.uuid4().hex[:8]}")
        seen = []
        for _ in range(10):
            batch = consumer.poll(5000, 0.5)
            if not batch and seen:
                break
            seen.extend(batch)
        consumer.close()
        table = {}
        for message in seen:
            if message.value:
                table[message.key] = message.value
            else:
                table.pop(message.key, None)
        # The cleaner has run once the first records (offsets 0-2) are no longer all in the log.
        rewritten = bool(seen) and min(m.offset for m in seen if m.key == b"keep") == 0 and b"gone" not in {m.key for m in seen}
    producer.flush()
    bus.close()
    assert rewritten, "the log cleaner never compacted the table within the deadline"
    assert NetworkIntent.model_validate_json(table[b"keep"]) == in_force
    assert b"gone" not in table


def test_a_duplicate_intent_is_recognised_and_a_retraction_takes_its_flow_away(tmp_path: Path, extractor_dir: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path,
        intent={"extractor_dir": extractor_dir, "user_demand": "keywords"},
        controller={"targets": {"servers": {"ipv4_dst": "10.0.0.9/32"}}},  # the operator tenant, out of the box
    )
    bus = EmbeddedBus(default_partitions=1)
    intents = intent_runners(settings, bus, checkpoints=CheckpointStore(tmp_path / "intents.sqlite"))
    producer = bus.producer()
    for i in range(5):
        producer.send(settings.topics.operator_intents, orjson.dumps({"request_id": f"op-{i}", "text": "block traffic to the servers"}))
    run_until_idle(intents.runners, 0.05)
    records = [IntentRecord.model_validate_json(m.value) for m in bus.messages(settings.topics.intent_results)]
    assert [r.status for r in records] == ["accepted"] + ["duplicate"] * 4
    assert {r.duplicate_of for r in records[1:]} == {"op-0"}
    assert len(bus.messages(settings.topics.intents)) == 1  # one intent in force, not five

    decisions = StreamRunner(bus, decision_service(settings, policies=[IntentQosAclPolicy()], adapters=[]))
    run_until_idle([decisions], 0.05)
    service: DecisionService = decisions.service  # type: ignore[assignment]
    first = service.decide_round()
    assert [d.intent_id for d in first.guardrails.accepted] == ["op-0"]
    assert service.controller is not None and list(service.controller.in_force) == [first.guardrails.accepted[0].idempotency_key]

    producer.send(settings.topics.operator_intents, orjson.dumps({"request_id": "op-0", "retract": True}))
    producer.send(settings.topics.operator_intents, orjson.dumps({"request_id": "never-sent", "retract": True}))
    run_until_idle(intents.runners, 0.05)
    assert [IntentRecord.model_validate_json(m.value).status for m in bus.messages(settings.topics.intent_results)][-1] == "retracted"
    (tombstone,) = bus.messages(settings.topics.intents)[1:]
    assert tombstone.key == b"op-0" and tombstone.value == b""
    (letter,) = bus.messages(settings.intent.dead_letter_topic)
    assert b"never-sent" in letter.value
    run_until_idle([decisions], 0.05)
    assert service.intents == {}
    second = service.decide_round()
    assert second.withdrawn == [first.guardrails.accepted[0].idempotency_key] and service.controller.in_force == {}
    for runner in [*intents.runners, decisions]:
        runner.close()
