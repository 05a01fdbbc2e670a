"""Model placement (issue 13): serving figures measured into the model card, the policy that picks
each site's edge model from them, and the supervisor that restarts its replicas on the choice."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.config import load_settings
from nm_toolkit.llm.city_qa import build_city_qa_dataset
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.deployment import edge_completer
from nm_toolkit.llm.netgpt import EdgeRequest
from nm_toolkit.llm.profile import ServingProfile, profile_completer, read_profiles, record_profiles
from nm_toolkit.llm.supervisor import EdgeSupervisor
from nm_toolkit.schemas import PlaceModel, ScaleCompute
from policies.model_placement import ModelPlacementPolicy, SiteBudget, choose_model
from tests.test_policy_helpers import context

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def profile(variant: str, p95_ms: float, weights_mb: float, requests_per_s: float = 50.0) -> ServingProfile:
    return ServingProfile(variant, p95_ms * 0.8, p95_ms, requests_per_s, weights_mb, 8, 64, "test", "2026-11-26T00:00:00+00:00")


def test_the_first_candidate_variant_inside_the_budget_is_chosen() -> None:
    options = [("large", profile("fp32", 900, 40)), ("large", profile("int8", 700, 12)), ("small", profile("fp32", 200, 8))]
    assert choose_model(options, SiteBudget(p95_ms=1000, memory_mb=50)) == options[0]
    assert choose_model(options, SiteBudget(p95_ms=800, memory_mb=50)) == options[1]  # int8 of the large one first
    assert choose_model(options, SiteBudget(memory_mb=10)) == options[2]
    assert choose_model(options, SiteBudget(p95_ms=100)) is None
    assert SiteBudget(requests_per_s=60).misfit(options[2][1]) == "50 requests/s < 60"


def test_policy_places_per_site_from_the_cards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    large, small, unprofiled = tmp_path / "large", tmp_path / "small", tmp_path / "none"
    for directory in (large, small, unprofiled):
        directory.mkdir()
    record_profiles(large, [profile("fp32", 900, 40), profile("int8", 700, 12)])
    record_profiles(small, [profile("fp32", 200, 8)])
    assert read_profiles(large)["int8"] == profile("int8", 700, 12)
    policy = ModelPlacementPolicy(
        candidates=[str(unprofiled), str(large), str(small)],
        sites={"edge-big": {"p95_ms": 1000}, "edge-mid": {"p95_ms": 800}, "edge-tiny": {"memory_mb": 10}, "edge-none": {"p95_ms": 50}},
    )
    placed = {d.target: (Path(d.model).name, d.quantize) for d in policy.decide(context())}
    assert placed == {"edge-big": ("large", False), "edge-mid": ("large", True), "edge-tiny": ("small", False)}
    assert "no edge model fits site edge-none" in caplog.text


def test_profiling_the_edge_model_measures_both_variants_into_its_card(tiny_llms: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(tiny_llms / "edge"))
    monkeypatch.setenv("NMT_LLM__CONTEXT_STORE", str(tiny_llms / "context.json"))
    settings = load_settings()
    _, held_out = build_city_qa_dataset(ContextStore.load(tiny_llms / "context.json"), 0, 6, seed=0)
    asked = [EdgeRequest(e.text, e.cell, e.user) for e in held_out]
    fp32 = profile_completer(edge_completer(settings), asked, 3, "fp32")
    int8_settings = settings.model_copy(update={"llm": settings.llm.model_copy(update={"quantize_edge": True})})
    int8 = profile_completer(edge_completer(int8_settings), asked, 3, "int8")
    assert fp32.requests == int8.requests == 6 and 0 < fp32.p50_ms <= fp32.p95_ms
    assert int8.weights_mb < fp32.weights_mb  # int8 linear weights
    record_profiles(tiny_llms / "edge", [fp32, int8])
    assert read_profiles(tiny_llms / "edge") == {"fp32": fp32, "int8": int8}


def test_the_supervisor_restarts_its_replicas_on_the_placed_model(tmp_path: Path) -> None:
    launched: list[tuple[int, dict[str, str]]] = []

    def launch(index: int, model_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        launched.append((index, dict(model_env)))
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    bus = EmbeddedBus()
    supervisor = EdgeSupervisor(launch, site="edge-1", decisions_topic="decisions", group_id="sup", dead_letter_topic="dlq", initial_replicas=2)
    runner = StreamRunner(bus, supervisor)
    producer = bus.producer()
    stamp = {"policy": "model_placement", "reason": "fits", "created_at": datetime.now(UTC)}
    try:
        runner.step(timeout_s=0.1)
        assert [i for i, _ in launched] == [0, 1] and all(env == {} for _, env in launched)
        producer.send("decisions", PlaceModel(idempotency_key="m", target="edge-1", model="/models/small", quantize=True, **stamp).model_dump_json().encode())
        producer.send("decisions", PlaceModel(idempotency_key="o", target="edge-2", model="/models/other", **stamp).model_dump_json().encode())
        producer.send("decisions", ScaleCompute(idempotency_key="s", target="edge-1", replicas=3, **stamp).model_dump_json().encode())
        producer.flush()
        runner.step(timeout_s=0.5)
        expected = {"NMT_LLM__EDGE_MODEL": "/models/small", "NMT_LLM__QUANTIZE_EDGE": "true"}
        # both running replicas replaced on the new model, the third started on it
        assert launched[2:] == [(0, expected), (1, expected), (2, expected)]
        counters = supervisor.counters
        assert (counters.model_changes, counters.stopped, counters.running_replicas, counters.decisions_applied) == (1, 2, 3, 2)
    finally:
        runner.close()
    assert supervisor.counters.running_replicas == 0
