"""The CLI of this area: ``nmt policy list/test``, ``nmt decisions tail``, ``nmt controller run``
(the last two against the real Kafka broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from collectors.publish import publish_records
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.cli import app
from nm_toolkit.cli.policy import ContextFileError
from nm_toolkit.config import Settings
from nm_toolkit.schemas import DecisionAdapter, ScaleCompute
from tests.test_policy_helpers import forecast

runner = CliRunner()


def test_policy_list_shows_installed_and_enabled_policies() -> None:
    result = runner.invoke(app, ["policy", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["bandwidth_reservation"]["enabled"] is True and rows["bandwidth_reservation"]["order"] == 1
    assert rows["example_cell_cap"]["enabled"] is False


def test_policy_test_runs_one_policy_and_reports_guardrail_verdicts(tmp_path: Path) -> None:
    context = {
        "capacities": {"cell-1": 100.0, "cell-2": 50.0},
        "forecasts": [json.loads(forecast("cell-1|mbps", [95.0]).model_dump_json())],
    }
    path = tmp_path / "context.json"
    path.write_text(json.dumps(context))
    result = runner.invoke(app, ["policy", "test", "--policy", "bandwidth_reservation", "--context", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["status"] == "ok"
    (item,) = out["decisions"]
    assert item["decision"]["target"] == "cell-1" and item["guardrails"] == "accepted"
    # the plug-in's caps pass; table output works too
    result = runner.invoke(app, ["policy", "test", "-p", "example_cell_cap", "--context", str(path)])
    assert result.exit_code == 0 and "cell-2" in result.output and "accepted" in result.output


def test_policy_test_with_a_bad_context_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"capacities": {"cell-1": "lots"}}))
    result = runner.invoke(app, ["policy", "test", "-p", "bandwidth_reservation", "--context", str(path)])
    assert isinstance(result.exception, ContextFileError)
    assert "capacities.cell-1" in str(result.exception) and "fix the context file" in str(result.exception)


@pytest.mark.kafka
def test_controller_run_on_kafka_then_decisions_tail(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = {"telemetry": "cli.telemetry", "series": "cli.series", "forecasts": "cli.forecasts",
              "decisions": "cli.decisions", "intents": "cli.intents", "dead_letter": "cli.dlq", "late": "cli.late"}
    telemetry = SyntheticTelemetry(n_sources=2, periods=72, metric="mbps", missing_probability=0.0,
                                   burst_probability=0.0, seed=5)
    frame = telemetry.frame()
    faucet_file = tmp_path / "faucet-nmt.yaml"
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NMT_POLICY__CAPACITIES": json.dumps({"cell-0000": float(frame["cell-0000"].max()) * 1.05}),
        "NMT_CONTROLLER__ADAPTER": "faucet", "NMT_CONTROLLER__FAUCET_CONFIG": str(faucet_file),
        "NMT_CONTROLLER__TARGETS": json.dumps({"cell-0000": {"ipv4_dst": "10.0.0.0/24"}}),
        **{f"NMT_TOPICS__{name.upper()}": topic for name, topic in topics.items()},
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([topics["telemetry"], topics["intents"]])
    producer = bus.producer()
    publish_records(producer, topics["telemetry"], telemetry.records())
    producer.send(topics["intents"], b'{"id": "broken"}', b"x")  # not an intent: dead-lettered
    producer.flush()
    assert settings.bus.kind == "kafka"

    result = runner.invoke(app, ["controller", "run", "--rounds", "3", "--interval", "2", "--json"])
    assert result.exit_code == 0, result.output
    rounds = json.loads(result.output)
    assert sum(r["faucet_applied"] for r in rounds) == 1 and sum(r["kafka_applied"] for r in rounds) == 1
    assert rounds[-1]["intents_dead_lettered"] == 1
    faucet = yaml.safe_load(faucet_file.read_text())
    assert faucet["acls"]["nmt"][0]["rule"]["ipv4_dst"] == "10.0.0.0/255.255.255.0"
    assert list(faucet["meters"]) == ["nmt-1"]

    # something else also publishes a decision; tail shows both
    scale = ScaleCompute(idempotency_key="s", policy="edge_autoscale", target="edge-a", reason="test", replicas=3)
    producer.send(topics["decisions"], DecisionAdapter.dump_json(scale), b"edge-a")
    producer.flush()
    result = runner.invoke(app, ["decisions", "tail", "--json", "--wait", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(d["kind"] for d in json.loads(result.output)) == ["reservation", "scale_compute"]
    producer.close()

