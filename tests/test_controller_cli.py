"""The CLI of this area: ``nmt policy list/test``, ``nmt decisions tail``, ``nmt controller run``
(the last two against the real Kafka broker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.schemas import DecisionAdapter, ScaleCompute
from tests.test_controller_ovs import free_port
from tests.test_policy_helpers import forecast

REPO = Path(__file__).resolve().parents[1]

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


def kafka_loop_env(bootstrap: str, prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    """Publish three days of telemetry of two cells to fresh topics; return the NMT_* settings
    of a loop over them (cell-0000 runs near capacity) and the topic names."""
    topics = {name: f"{prefix}.{name}" for name in
              ("telemetry", "series", "forecasts", "decisions", "intents", "dead_letter", "late")}
    telemetry = SyntheticTelemetry(n_sources=2, periods=72, metric="mbps", missing_probability=0.0,
                                   burst_probability=0.0, seed=5)
    bus = KafkaBus(bootstrap)
    bus.create_topics([topics["telemetry"], topics["intents"]])
    producer = bus.producer()
    publish_records(producer, topics["telemetry"], telemetry.records())
    producer.flush()
    producer.close()
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
        "NMT_POLICY__CAPACITIES": json.dumps({"cell-0000": float(telemetry.frame()["cell-0000"].max()) * 1.05}),
        "NMT_CONTROLLER__TARGETS": json.dumps({"cell-0000": {"ipv4_dst": "10.0.0.0/24"}}),
        **{f"NMT_TOPICS__{name.upper()}": topic for name, topic in topics.items()},
    }
    return env, topics


@pytest.mark.kafka
def test_controller_run_on_kafka_then_decisions_tail(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, topics = kafka_loop_env(kafka_bootstrap, "cli")
    faucet_file = tmp_path / "faucet-nmt.yaml"
    env |= {"NMT_CONTROLLER__ADAPTER": "faucet", "NMT_CONTROLLER__FAUCET_CONFIG": str(faucet_file)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    bus = KafkaBus(kafka_bootstrap)
    producer = bus.producer()
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



@pytest.mark.kafka
@pytest.mark.ovs
@pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)")
def test_nmt_controller_run_process_programs_open_vswitch(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`nmt controller run` as its own process: os-ken listens, the bridge connects, the loop's
    reservation lands on the switch as a metered flow (which outlives the process: fail-secure)."""
    env, _topics = kafka_loop_env(kafka_bootstrap, "ofrun")
    port = free_port()
    env |= {"NMT_CONTROLLER__ADAPTER": "openflow", "NMT_CONTROLLER__LISTEN_PORT": str(port)}
    with OpenVSwitch() as ovs:
        ovs.add_bridge("br-run", controller=f"tcp:127.0.0.1:{port}", datapath_id=2)
        done = subprocess.run(
            [sys.executable, "-c", "from nm_toolkit.cli import main; main()",
             "controller", "run", "--rounds", "3", "--interval", "2", "--json"],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rounds = json.loads(done.stdout)
        assert sum(r["openflow_applied"] for r in rounds) == 1, rounds
        (flow,) = [f for f in ovs.dump_flows("br-run") if "nw_dst=10.0.0.0/24" in f]
        assert "actions=meter:1,set_queue:1,NORMAL" in flow and 1 in ovs.dump_meters("br-run")
