"""The city question-answering task: its split, references and scoring, the two-kind grounded
candidates, the privacy of completed prompts, and the cloud's per-tenant adapters on a tiny LLaMA."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from nm_toolkit.errors import UserError
from nm_toolkit.llm.city_qa import (
    CITY_QA_TASK,
    DEFAULT_TENANT,
    LOCAL_KINDS,
    CLOUD_ONLY_FORMS,
    NETGPT_FORMS,
    TENANTS,
    answer_score,
    build_city_qa_dataset,
    cloud_pairs,
    context_question,
    edge_answer,
    example_context,
    example_reference,
    expected_place,
    is_open,
    names_place,
    reference_answer,
    train_cloud_adapters,
)
from nm_toolkit.llm.completion_data import KIND_LEADS, KINDS, OPEN_TEST_FRAMES, TEST_FRAMES, cloud_only_payload, walking_minutes
from nm_toolkit.llm.context import POI_CATEGORIES, synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.grounding import GroundedChoice, candidates
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import AdapterRegistry, LoraTrainConfig
from nm_toolkit.llm.netgpt import CloudResponder
from nm_toolkit.llm.privacy import DEFAULT_POLICY, check_egress


@pytest.fixture(scope="module")
def city():
    return synthetic_city(seed=5)


@pytest.fixture(scope="module")
def split(city):
    return build_city_qa_dataset(city, 400, 120, seed=5)


def test_split_holds_out_districts_and_phrasings_with_both_kinds_and_tenants(city, split) -> None:
    train, test = split
    assert not {city.cells[e.cell].district for e in train} & {city.cells[e.cell].district for e in test}
    held_out = tuple(f.split("{noun}")[0] for f in TEST_FRAMES + OPEN_TEST_FRAMES)
    assert all(e.text.startswith(held_out) for e in test)
    for examples in (train, test):
        assert {e.kind for e in examples} == set(KINDS) and {e.tenant for e in examples} == set(TENANTS)
        assert 0.25 < sum(e.kind == "open" for e in examples) / len(examples) < 0.55
    for e in train + test:
        assert e.completed.startswith(f"{KIND_LEADS[e.kind]} {e.category} near me in {city.cells[e.cell].district}")
        assert e.answer == example_reference(city, e).text and expected_place(city, e).name in e.completed
    # one pair per example and cloud question form, the answer after the prompt
    pairs = cloud_pairs(test[:5], city)
    assert len(pairs) == 15 and all(p.startswith("question: ") and p.endswith("\nanswer:") and a == " " + e.answer
                                    for (p, a), e in zip(pairs, [e for e in test[:5] for _ in range(3)], strict=True))  # fmt: skip


def test_references_and_scores(city, split) -> None:
    assert [walking_minutes(d) for d in (40, 80, 81, 900)] == [1, 1, 2, 12]
    assert is_open("pharmacy", "morning") and not is_open("pharmacy", "evening") and is_open("atm", "night")
    _, test = split
    open_walk = next(e for e in test if e.kind == "open" and e.tenant == "walk")
    reference = example_reference(city, open_walk)
    assert [f.label for f in reference.facts] == ["place", "distance", "minutes", "rating", "status", "hours"]
    assert answer_score(reference.text, reference) == 1.0
    # another place of the cell, named with its own facts: only the hours and status are right
    place = expected_place(city, open_walk)
    other = next(p for p in city.cells[open_walk.cell].pois
                 if walking_minutes(p.distance_m) != walking_minutes(place.distance_m) and p.rating != place.rating)  # fmt: skip
    wrong_place = reference_answer("open", open_walk.category, other, open_walk.time_of_day).text
    assert answer_score(wrong_place, reference) == pytest.approx(2 / 6) and not names_place(wrong_place, place)
    flipped = reference.text.replace("open now", "closed now") if "open now" in reference.text else reference.text.replace("closed now", "open now")
    assert answer_score(flipped, reference) == pytest.approx(5 / 6)
    assert answer_score("I do not know.", reference) == 0.0
    # the edge alone has no hours; the brief tenant's style lacks the walking app's facts
    edge = edge_answer(next(c for c in candidates(example_context(city, open_walk)) if c.place == place))
    assert answer_score(edge, reference) == pytest.approx(4 / 6) and names_place(edge, place)
    brief = example_reference(city, open_walk, "brief")
    assert answer_score(brief.text, reference) == pytest.approx(4 / 6) and answer_score(reference.text, brief) == 1.0
    assert rouge_gap(reference.text, brief.text)
    # a place whose name is a prefix of another's is not the other ("Bar Rossi" vs "Bar Rossi 12")
    assert not names_place("Bar Rossi 12, 40 m.", replace(place, name="Bar Rossi"))


def rouge_gap(right: str, wrong: str) -> bool:
    from nm_toolkit.llm.metrics import rouge_l

    return rouge_l(wrong, right) < 0.8 < rouge_l(right, right)


def test_candidates_are_category_by_kind_and_pass_the_egress_policy(city, split) -> None:
    _, test = split
    assert LOCAL_KINDS == {"nearest"} and set(LOCAL_KINDS) < set(KINDS)
    for example in test[:40]:
        context = example_context(city, example)
        found = candidates(context)
        assert [(c.category, c.kind) for c in found] == [(cat, kind) for cat in POI_CATEGORIES for kind in KINDS]
        for c in found:
            assert c.text.startswith(KIND_LEADS[c.kind]) and c.text[: c.span_chars] == f"{KIND_LEADS[c.kind]} {c.category}"
            assert check_egress({"request_id": "r", "text": c.text}, context, DEFAULT_POLICY) == [], c.text
        assert check_egress({"request_id": "r", "text": example.completed}, context, DEFAULT_POLICY) == []
        # what a cloud-only deployment ships does not pass
        assert check_egress({"request_id": "r", "text": cloud_only_payload(example.text, context).decode()}, context) != []
        assert context.cell.district in context_question(example.text, context)
    choice = GroundedChoice(tuple(found), (0.0,) * len(found), (1 / len(found),) * len(found), 3)
    assert (choice.chosen.category, choice.chosen.kind) == (list(POI_CATEGORIES)[1], KINDS[1])


def test_cloud_responder_answers_with_each_tenants_adapter(city, split, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = InitConfig(arch="llama", preset="tiny", steps=3, batch_size=4, seed=1,
                          corpus=CorpusConfig(user_prompts=60, intents=30, telemetry=30, contexts=30, vocabulary_repeats=1))  # fmt: skip
        save_initialised(tmp_path / "cloud", *initialise_model(tiny))
        registry = AdapterRegistry(tmp_path / "cloud" / "adapters")
        train, test = split
        config = LoraTrainConfig(rank=4, alpha=8, epochs=0.1, batch_size=8)
        cards = train_cloud_adapters(tmp_path / "cloud", registry, train[:60], city, config)
        assert [c.name for c in cards] == list(TENANTS) and all(c.task == CITY_QA_TASK for c in cards)
        again = train_cloud_adapters(tmp_path / "cloud", registry, train[:60], city, config)
        assert again == cards  # cached: same config and data, nothing retrained
        # NetGPT's adapters learn the completed prompts only; a cloud-only deployment's the other two
        # forms, for the same number of steps (the epochs are shared among its forms)
        per_tenant = {t: sum(e.tenant == t for e in train[:60]) for t in TENANTS}
        assert [(c.train_examples, c.config["forms"]) for c in cards] == [(per_tenant[t], list(NETGPT_FORMS)) for t in TENANTS]
        other = train_cloud_adapters(tmp_path / "cloud", AdapterRegistry(tmp_path / "only"), train[:60], city, config, forms=CLOUD_ONLY_FORMS)
        assert [(c.train_examples, c.config["forms"], c.config["lora"]["epochs"]) for c in other] == [
            (2 * per_tenant[t], list(CLOUD_ONLY_FORMS), config.epochs / 2) for t in TENANTS
        ]
        cloud = CloudResponder(AdapterLM.load(tmp_path / "cloud", registry), GenerationLimits(max_new_tokens=3))
        assert sorted(cloud.lm.cards) == sorted(TENANTS)
        out = cloud.answer([e.completed for e in test[:3]], ["brief", "walk", None])
        assert [g.adapter for g in out] == ["brief", "walk", DEFAULT_TENANT] and all(g.new_tokens <= 3 for g in out)
        assert len(cloud.answer([test[0].completed])) == 1  # tenants are optional
        with pytest.raises(UserError, match="not loaded"):
            cloud.answer([test[0].completed], ["nobody"])
    finally:
        torch.set_num_threads(threads)


def test_time_of_day_of_requests_is_when_the_hours_are_checked() -> None:
    from nm_toolkit.llm.context import time_of_day
    from nm_toolkit.llm.completion_data import TIME_OF_DAY_HOURS

    for period, hour in TIME_OF_DAY_HOURS.items():
        assert time_of_day(datetime(2024, 1, 1, hour, tzinfo=UTC)) == period
