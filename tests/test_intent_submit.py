"""`nmt intent submit`: an operator intent onto the running system's operator-intents topic (real broker)."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from intent.service import OperatorMessage
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.cli import app
from nm_toolkit.errors import UserError
from tests.kafka_helpers import read_all


def submit_env(bootstrap: str) -> tuple[dict[str, str], str]:
    topic = f"submit-{uuid.uuid4().hex[:8]}.operator"
    return {"NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap, "NMT_TOPICS__OPERATOR_INTENTS": topic}, topic


def test_submit_publishes_the_operator_intent_with_its_request_id(kafka_bootstrap: str) -> None:
    env, topic = submit_env(kafka_bootstrap)
    runner = CliRunner()
    text = "Peer-to-peer traffic is not permitted on the guest network after 10pm."
    first = runner.invoke(app, ["intent", "submit", text, "--tenant", "campus", "--json"], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["intent", "submit", "block netflix for guests", "--json"], env=env)
    assert second.exit_code == 0, second.output
    ids = [json.loads(first.stdout)["request_id"], json.loads(second.stdout)["request_id"]]
    assert ids[0] != ids[1] and all(ids)

    messages = read_all(KafkaBus(kafka_bootstrap), topic, expected=2)
    sent = sorted((OperatorMessage.model_validate_json(m.value) for m in messages), key=lambda m: ids.index(m.request_id))
    assert [(m.request_id, m.text, m.tenant) for m in sent] == [(ids[0], text, "campus"), (ids[1], "block netflix for guests", None)]
    assert {json.dumps(sorted(json.loads(m.value))) for m in messages} == {'["request_id", "tenant", "text"]', '["request_id", "text"]'}
    assert {m.key for m in messages if b'"campus"' in m.value} == {b"campus"}  # one tenant's intents in one partition


@pytest.mark.parametrize(("args", "error"), [(["   "], "the intent text is empty"), (["block ssh", "--tenant", "x" * 300], "--tenant")])
def test_submit_refuses_what_the_service_would_reject(kafka_bootstrap: str, args: list[str], error: str) -> None:
    env, _ = submit_env(kafka_bootstrap)
    result = CliRunner().invoke(app, ["intent", "submit", *args], env=env)
    assert isinstance(result.exception, UserError) and error in str(result.exception)


def test_submit_needs_the_shared_bus() -> None:
    result = CliRunner().invoke(app, ["intent", "submit", "block ssh"], env={"NMT_BUS__KIND": "embedded"})
    assert isinstance(result.exception, UserError) and "NMT_BUS__KIND=kafka" in str(result.exception)


def test_submit_and_retract_wait_for_the_running_services_answer(kafka_bootstrap: str, tmp_path) -> None:  # noqa: ANN001
    """An operator submits the same intent twice and retracts it, through the CLI, against the
    intent service running on the broker: accepted, duplicate, retracted."""
    import threading
    from pathlib import Path

    from intent.data import load_intents
    from intent.service import intent_runners
    from intent.tagger import SklearnIntentTagger
    from nm_toolkit.bus.runtime import run_together
    from nm_toolkit.config import load_settings

    tag = uuid.uuid4().hex[:8]
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap, "NMT_STATE_DIR": str(tmp_path),
        **{f"NMT_TOPICS__{t.upper()}": f"{tag}.{t}" for t in ("operator_intents", "intents", "intent_results", "prompts", "series")},
        "NMT_INTENT__GROUP_ID": f"intent-{tag}", "NMT_INTENT__DEMAND_TOPIC": f"{tag}.demand",
        "NMT_INTENT__DEAD_LETTER_TOPIC": f"{tag}.dlq", "NMT_INTENT__USER_DEMAND": "edge",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = load_settings()
    extractor = SklearnIntentTagger().fit(load_intents(Path(__file__).parent / "data" / "nile_intents_slice.json"))
    service = intent_runners(settings, KafkaBus(kafka_bootstrap), extractor=extractor)
    stop = threading.Event()
    thread = threading.Thread(target=run_together, args=(service.runners, stop), daemon=True)
    thread.start()
    try:
        statuses = []
        for args in (["submit", "block traffic to the servers", "--request-id", "a"], ["submit", "block traffic to the servers"],
                     ["retract", "a"]):  # fmt: skip
            result = CliRunner().invoke(app, ["intent", *args, "--wait", "120", "--json"], env=env)
            assert result.exit_code == 0, result.output
            statuses.append(json.loads(result.stdout)["status"])
    finally:
        stop.set()
        thread.join(60)
        for runner in service.runners:
            runner.close()
    assert statuses == ["accepted", "duplicate", "retracted"]
