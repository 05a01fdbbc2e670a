"""The CLI of this area: ``nmt policy list/test``, ``nmt decisions tail``, ``nmt controller run``
(the last two against the real Kafka broker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from intent.data import load_intents
from intent.tagger import SklearnIntentTagger
from nm_toolkit.bus.deadletter import REASON
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.cli import app
from nm_toolkit.cli.policy import ContextFileError
from nm_toolkit.config import Settings
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.schemas import DecisionAdapter, Forecast, ScaleCompute
from tests.kafka_helpers import read_all
from tests.test_controller_ovs import free_port, wait_until
from tests.test_policy_helpers import forecast

REPO = Path(__file__).resolve().parents[1]

runner = CliRunner()


def test_policy_list_shows_installed_and_enabled_policies() -> None:
    result = runner.invoke(app, ["policy", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
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
    out = json.loads(result.stdout)
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


def fresh_forecast(series_id: str, peak: float) -> Forecast:
    """A forecast issued now, as the forecasting service publishes it."""
    now = datetime.now(UTC).replace(microsecond=0)
    mean = [peak * 0.8, peak]
    return Forecast(series_id=series_id, model="seasonal_naive", issued_at=now, step_seconds=3600,
                    start=now + timedelta(hours=1), mean=mean, lower=[0.0, 0.0], upper=mean)


def forecast_loop_env(bootstrap: str, prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    """Fresh topics with one forecast on the forecasts topic (cell-0000 nears its capacity of 100)
    and nothing else: no telemetry, no collector, no forecaster. Return the NMT_* settings of a
    decision stage over them and the topic names."""
    tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
    topics = {name: f"{tag}.{name}" for name in ("forecasts", "decisions", "intents")}
    bus = KafkaBus(bootstrap)
    bus.create_topics(list(topics.values()))
    producer = bus.producer()
    producer.send(topics["forecasts"], fresh_forecast("cell-0000|mbps", 95.0).model_dump_json().encode(), b"cell-0000|mbps")
    producer.flush()
    producer.close()
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
        "NMT_POLICY__CAPACITIES": json.dumps({"cell-0000": 100.0}),
        "NMT_CONTROLLER__TARGETS": json.dumps({"cell-0000": {"ipv4_dst": "10.0.0.0/24"}}),
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}", "NMT_CONTROLLER__DEAD_LETTER_TOPIC": f"{tag}.dlq",
        **{f"NMT_TOPICS__{name.upper()}": topic for name, topic in topics.items()},
    }
    return env, topics


@pytest.mark.kafka
def test_a_forecast_on_the_topic_alone_yields_a_decision_then_decisions_tail(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, topics = forecast_loop_env(kafka_bootstrap, "cli")
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
    rounds = json.loads(result.stdout)
    # the forecast's reservation is a queue, which Faucet ACLs cannot set: on the topic, not in Faucet
    assert sum(r["kafka_applied"] for r in rounds) == 1
    assert sum(r["faucet_applied"] for r in rounds) == 0 and sum(r["faucet_unsupported"] for r in rounds) >= 1
    (dead,) = read_all(bus, settings.controller.dead_letter_topic, 1)
    assert dead.value == b'{"id": "broken"}' and b"NetworkIntent" in (dead.header(REASON) or b"")
    faucet = yaml.safe_load(faucet_file.read_text())
    assert faucet == {"acls": {"nmt-sw1": [{"rule": {"actions": {"allow": True}}}]}}

    # something else also publishes a decision; tail shows both
    scale = ScaleCompute(idempotency_key="s", policy="edge_autoscale", target="edge-a", reason="test", replicas=3)
    producer.send(topics["decisions"], DecisionAdapter.dump_json(scale), b"edge-a")
    producer.flush()
    result = runner.invoke(app, ["decisions", "tail", "--json", "--wait", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(d["kind"] for d in json.loads(result.stdout)) == ["reservation", "scale_compute"]
    producer.close()


def run_nmt(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from nm_toolkit.cli import main; main()", *args],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
    )


@pytest.mark.kafka
@pytest.mark.ovs
@pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)")
def test_nmt_controller_run_process_programs_open_vswitch(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`nmt controller run` as its own process: os-ken listens, the bridge connects, the forecast's
    reservation lands on the switch as its queue (OVSDB) and a flow into it (both outlive the
    process: fail-secure)."""
    env, _topics = forecast_loop_env(kafka_bootstrap, "ofrun")
    port = free_port()
    env |= {"NMT_CONTROLLER__ADAPTER": "openflow", "NMT_CONTROLLER__LISTEN_PORT": str(port)}
    with OpenVSwitch() as ovs:
        env["NMT_CONTROLLER__QUEUES__OVSDB"] = f"unix:{ovs.db_socket}"
        ovs.add_bridge("br-run", controller=f"tcp:127.0.0.1:{port}", ports=1, datapath_id=2)
        done = run_nmt(["controller", "run", "--rounds", "3", "--interval", "2", "--json"], env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        rounds = json.loads(done.stdout)
        assert sum(r["openflow_applied"] for r in rounds) == 1, rounds
        (flow,) = [f for f in ovs.dump_flows("br-run") if "nw_dst=10.0.0.0/24" in f]
        assert "actions=set_queue:8,NORMAL" in flow and set(ovs.qos_show("br-run-p1")) == {0, 8}


@pytest.mark.kafka
@pytest.mark.ovs
@pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)")
def test_an_operator_sentence_ends_as_a_flow_on_open_vswitch(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The whole seam: operator text on topics.operator_intents -> `nmt intent serve` (extractor,
    Nile, NetworkIntent on topics.intents) -> `nmt controller run` (intent policy, guardrails,
    os-ken) -> a drop flow for the servers' subnet on the bridge. With the default settings: the
    operator's own tenant may touch any target."""
    extractor = SklearnIntentTagger().fit(load_intents(REPO / "tests" / "data" / "nile_intents_slice.json"))
    extractor_dir = extractor.save_pretrained(tmp_path / "extractor")
    tag = uuid.uuid4().hex[:6]
    port = free_port()
    env = {
        "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": kafka_bootstrap, "NMT_STATE_DIR": str(tmp_path / "state"),
        **{f"NMT_TOPICS__{name.upper()}": f"{tag}.{name}" for name in
           ("operator_intents", "intents", "intent_results", "prompts", "series", "forecasts", "decisions")},
        "NMT_INTENT__EXTRACTOR_DIR": str(extractor_dir), "NMT_INTENT__GROUP_ID": f"intent-{tag}",
        "NMT_INTENT__DEMAND_TOPIC": f"{tag}.demand", "NMT_INTENT__DEAD_LETTER_TOPIC": f"{tag}.intent-dlq",
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}", "NMT_CONTROLLER__ADAPTER": "openflow",
        "NMT_CONTROLLER__LISTEN_PORT": str(port),
        "NMT_CONTROLLER__TARGETS": json.dumps({"servers": {"ipv4_dst": "10.0.9.0/24"}}),
        "NMT_POLICY__ENABLED": json.dumps(["intent_qos_acl"]),
    }  # fmt: skip
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([env["NMT_TOPICS__OPERATOR_INTENTS"]])
    producer = bus.producer()
    producer.send(env["NMT_TOPICS__OPERATOR_INTENTS"], b'{"request_id": "no-servers", "text": "block traffic to the servers"}')
    producer.flush()
    producer.close()

    served = run_nmt(["intent", "serve", "--max-records", "1", "--json"], env, tmp_path)
    assert served.returncode == 0, served.stderr[-2000:]
    assert json.loads(served.stdout[served.stdout.index("{"):])["network_intents"] == 1
    with OpenVSwitch() as ovs:
        ovs.add_bridge("br-intent", controller=f"tcp:127.0.0.1:{port}", datapath_id=3)
        controller = subprocess.Popen(
            [sys.executable, "-c", "from nm_toolkit.cli import main; main()", "controller", "run", "--interval", "1", "--json"],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: any("nw_dst=10.0.9.0/24" in f for f in ovs.dump_flows("br-intent")), 60, "the intent's flow")
        finally:
            controller.send_signal(signal.SIGTERM)
            out, err = controller.communicate(timeout=60)
        assert controller.returncode == 0, err[-2000:]
        assert sum(r["openflow_applied"] for r in json.loads(out)) == 1
        (flow,) = [f for f in ovs.dump_flows("br-intent") if "nw_dst=10.0.9.0/24" in f]
        assert "actions=drop" in flow
