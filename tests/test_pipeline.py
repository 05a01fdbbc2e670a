"""The closed loop and the collector's delivery guarantees on the embedded bus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from collectors.publish import publish_records
from collectors.service import TelemetryCollector
from collectors.synthetic import SyntheticTelemetry
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.checkpoints import CheckpointStore
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.cli import app
from nm_toolkit.config import ConfigError, load_settings
from nm_toolkit.demo import DEMO_POLICIES
from nm_toolkit.devtools.ovs import ovs_available
from nm_toolkit.pipeline import ClosedLoop
from nm_toolkit.schemas import DecisionAdapter, Forecast, SeriesPoint


def test_crash_between_checkpoint_and_commit_skips_redelivered_messages(tmp_path: Path) -> None:
    settings = load_settings(collector={"window_seconds": 3600, "max_poll_records": 3}, state_dir=tmp_path)
    bus = EmbeddedBus(default_partitions=2)
    telemetry = SyntheticTelemetry(n_sources=6, periods=48, seed=1)
    publish_records(bus.producer(), settings.topics.telemetry, telemetry.records(), batch_size=8)
    store_path = tmp_path / "ckpt.sqlite"

    def collector() -> TelemetryCollector:
        topics = settings.topics
        return TelemetryCollector(
            settings.collector, input_topic=topics.telemetry, series_topic=topics.series, late_topic=topics.late,
            dead_letter_topic=topics.dead_letter, checkpoints=CheckpointStore(store_path),
        )  # fmt: skip

    crashed = StreamRunner(bus, collector())
    crashed.consumer.commit = lambda offsets: None  # type: ignore[method-assign]  # dies before committing
    for _ in range(4):
        crashed.step(0.05)
    crashed.commit()  # the checkpoint is written, the commit is lost
    crashed.consumer.close()  # leaves the group: everything is redelivered from offset 0
    crashed_stats = crashed.service.stats()

    resumed = StreamRunner(bus, collector())
    run_until_idle([resumed])
    resumed.service.close_all_windows(resumed.emitter)
    resumed_stats = resumed.service.stats()
    # resuming at the checkpoint, nothing below it is even read again
    assert resumed_stats["redelivered_skipped"] == 0 and crashed_stats["messages"] > 0
    assert resumed_stats["messages"] + crashed_stats["messages"] == len(bus.messages(settings.topics.telemetry))
    assert crashed_stats["records"] + resumed_stats["records"] == int(telemetry.frame().notna().sum().sum())

    latest: dict[tuple[str, int], SeriesPoint] = {}
    for m in bus.messages(settings.topics.series):
        p = SeriesPoint.model_validate_json(m.value)
        key = (p.series_id, int(p.window_start.timestamp()))
        assert key not in latest or latest[key] == p  # re-emitted windows are identical
        latest[key] = p
    frame = telemetry.frame()
    assert sum(p.sum for p in latest.values()) == pytest.approx(float(frame.sum().sum()))
    assert sum(p.count for p in latest.values()) == int(frame.notna().sum().sum())


def test_closed_loop_reserves_for_the_cell_whose_forecast_nears_capacity(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    bus = EmbeddedBus()
    telemetry = SyntheticTelemetry(n_sources=5, periods=24 * 7, seed=2, burst_probability=0, missing_probability=0)
    frame = telemetry.frame()
    publish_records(bus.producer(), settings.topics.telemetry, telemetry.records())
    hot = frame.columns[0]
    capacities = {c: float(frame[c].max()) * 10 for c in frame.columns} | {hot: float(frame[hot].max()) * 1.05}
    loop = ClosedLoop(bus, settings, capacities=capacities)
    report = loop.run_once(idle_s=0.1, close_windows=True)
    loop.close()

    assert report.collector["records"] == frame.size and report.series == 5
    assert len(report.forecasts) == 5 and report.skipped_series == {}
    assert [d.target for d in report.decisions] == [hot]
    decision = report.decisions[0]
    assert decision.kind == "reservation" and decision.bandwidth <= decision.capacity
    published = [DecisionAdapter.validate_json(m.value) for m in bus.messages(settings.topics.decisions)]
    assert published == report.decisions
    forecasts = [Forecast.model_validate_json(m.value) for m in bus.messages(settings.topics.forecasts)]
    assert {f.series_id for f in forecasts} == {f"{c}|traffic" for c in frame.columns}
    assert all(f.horizon == settings.forecast.horizon for f in forecasts)


def test_demo_runs_the_whole_system_and_reports_as_json(tmp_path: Path) -> None:
    """Telemetry and prompts through the edge and cloud services, intents, forecasts, policies and
    guardrails to decisions, one of which the edge service carries out (tiny models, built once)."""
    figure = tmp_path / "day.png"
    result = CliRunner().invoke(app, ["demo", "--size", "tiny", "--cells", "8", "--days", "5", "--prompts", "12", "--plot", str(figure), "--json"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    telemetry, prompts = out["telemetry"], out["prompts"]
    assert telemetry["records_ingested"] > 8 * 5 * 24 * 0.9
    assert telemetry["dead_lettered_records"] == 5
    assert telemetry["forecasts"] >= 8 + 4  # the cells and the edge site's own load series
    assert telemetry["decisions_accepted"] == len(out["decisions"]) >= 3
    # every prompt answered exactly once, at the edge or in the cloud, and the link carried only escalations
    assert prompts["answers"] == prompts["prompts"] == 12
    assert prompts["answered_at_edge"] + prompts["answered_in_cloud"] == 12 and prompts["errors"] == 0  # none waited past its timeout
    # every prompt's service class came from the edge service (its model, or the rules below its threshold)
    assert prompts["service_class_by_edge_model"] + prompts["service_class_by_keywords"] == 12
    assert prompts["service_intents_inferred"] + prompts["needing_clarification"] == 12
    assert (prompts["bytes_edge_to_cloud"] > 0) == (prompts["answered_in_cloud"] > 0)
    assert prompts["bytes_edge_to_cloud"] < prompts["bytes_cloud_only"]
    runs = {run["policy"]: run for run in out["policy_runs"]}
    assert set(runs) == set(DEMO_POLICIES)
    assert all(run["status"] == "ok" for run in runs.values())
    decided = {row["policy"] for row in out["decisions_by_kind"]}
    # the edge link reserves only ahead of a busy forecast; the busiest cells' demand history is forecast and reserved for
    assert {"edge_autoscale", "adapter_placement", "model_placement", "demand_reservation"} <= decided
    sites = {d["target"] for d in out["decisions"] if d["kind"] in ("scale_compute", "place_adapter", "place_model")}
    assert sites == {"edge-0"}  # cells' demand drives decisions for the site serving them
    [placed] = [d for d in out["decisions"] if d["kind"] == "place_model"]
    assert placed["target"] == "edge-0" and not placed["quantize"]  # the tiny fp32 model fits the demo site's budget
    assert out["edge_service"]["adapter_placements"] >= 1  # the edge took in its place_adapter decision
    # the supervisor carried out the site's scale_compute and place_model: the replicas it started serve
    [scale] = [d for d in out["decisions"] if d["kind"] == "scale_compute"]
    supervisor = out["supervisor"]
    assert supervisor["desired_replicas"] == scale["replicas"] == supervisor["replicas_serving"] >= 1
    assert supervisor["decisions_applied"] == 2 and supervisor["model_changes"] == 1 and supervisor["running_replicas"] == 0  # stopped at the end
    assert figure.is_file() and out["figure"] == str(figure)


@pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed (make test installs it)")
def test_demo_carries_reservations_out_on_open_vswitch(tmp_path: Path) -> None:
    """`nmt demo --ovs` (what `make demo` runs where OVS is installed): every reservation that
    passed the guardrails is a queue of its own (and a flow into it) on the private bridge. Its
    own process: one OpenFlow controller per process."""
    proc = subprocess.run(
        [sys.executable, "-m", "nm_toolkit", "demo", "--size", "tiny", "--ovs", "--cells", "6", "--days", "8", "--prompts", "4", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "NMT_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = orjson.loads(proc.stdout)
    reservations = [d for d in out["decisions"] if d["kind"] == "reservation"]
    assert reservations and out["switch"]["queues"] >= len(reservations)
    assert out["switch"]["flows"] >= len(reservations)


def test_settings_come_from_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nmt.toml").write_text('[bus]\nkind = "kafka"\nbootstrap_servers = "10.0.0.1:9092"\n[collector]\nwindow_seconds = 60\n')
    monkeypatch.setenv("NMT_COLLECTOR__WINDOW_SECONDS", "300")
    settings = load_settings()
    assert settings.bus.kind == "kafka" and settings.bus.bootstrap_servers == "10.0.0.1:9092"
    assert settings.collector.window_seconds == 300
    monkeypatch.setenv("NMT_COLLECTOR__WINDOW_SECONDS", "-5")
    with pytest.raises(ConfigError, match="window_seconds"):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_user_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    for args in (["demo", "--input", str(bad)], ["collect", "run"]):
        proc = subprocess.run([sys.executable, "-m", "nm_toolkit", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
