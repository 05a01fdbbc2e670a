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
    ids = [json.loads(first.output)["request_id"], json.loads(second.output)["request_id"]]
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
