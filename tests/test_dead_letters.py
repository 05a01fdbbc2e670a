"""`nmt dead-letters` on the real broker: a rejected message is shown with its reason and origin,
and replayed to its original topic at most once, however often replay runs."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.cli import app
from tests.kafka_helpers import read_all


def run(args: list[str]) -> object:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output[result.output.index("[") :])


def test_a_dead_letter_is_shown_and_replayed_once(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap, "NMT_STATE_DIR": str(tmp_path),
        **{f"NMT_TOPICS__{t.upper()}": f"{tag}.{t}" for t in ("telemetry", "dead_letter", "late", "series", "decisions", "dead_letter_replays")},
        "NMT_COLLECTOR__GROUP_ID": f"collector-{tag}", "NMT_FORECAST_SERVICE__DEAD_LETTER_TOPIC": f"{tag}.forecast.dlq",
        "NMT_CONTROLLER__DEAD_LETTER_TOPIC": f"{tag}.controller.dlq", "NMT_LLM__DEAD_LETTER_TOPIC": f"{tag}.edge.dlq",
        "NMT_LLM__CLOUD_DEAD_LETTER_TOPIC": f"{tag}.cloud.dlq", "NMT_INTENT__DEAD_LETTER_TOPIC": f"{tag}.intent.dlq",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([f"{tag}.telemetry"], partitions=1)
    producer = bus.producer()
    good = orjson.dumps({"ts": 1_704_067_200, "source": "r1", "metric": "rx_bps", "value": 1.0})
    producer.send(f"{tag}.telemetry", good, b"r1")
    producer.send(f"{tag}.telemetry", b'{"ts": "yesterday", "source": "r1"}', b"r1")
    producer.flush()
    result = CliRunner().invoke(app, ["collect", "run", "--idle-exit", "2", "--json"])
    assert result.exit_code == 0, result.output

    (letter,) = run(["dead-letters", "tail", "--wait", "2"])
    assert letter["service"] == "collector" and letter["origin"] == f"{tag}.telemetry/0/1"
    assert letter["position"] == f"{tag}.dead_letter/0/0"
    assert letter["reason"] and not letter["truncated"]
    assert run(["dead-letters", "tail", "--service", "intent", "--wait", "1"]) == []

    dry = run(["dead-letters", "replay", "--all", "--dry-run", "--wait", "2"])
    assert [row["status"] for row in dry] == ["would_replay"]
    assert len(read_all(bus, f"{tag}.telemetry", 2, timeout_s=30)) == 2  # a dry run sends nothing

    first = run(["dead-letters", "replay", letter["position"], "--wait", "2"])
    assert first == [{"position": letter["position"], "status": "replayed", "to": f"{tag}.telemetry"}]
    again = run(["dead-letters", "replay", "--all", "--wait", "2"])
    assert [row["status"] for row in again] == ["already_replayed"]
    telemetry = read_all(bus, f"{tag}.telemetry", 3, timeout_s=30)
    assert [m.value for m in telemetry][-1] == b'{"ts": "yesterday", "source": "r1"}' and len(telemetry) == 3
    assert telemetry[-1].key == b"r1"

    missing = CliRunner().invoke(app, ["dead-letters", "replay", f"{tag}.dead_letter/0/99", "--wait", "1"])
    assert missing.exit_code != 0
