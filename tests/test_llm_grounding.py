"""Grounded completion: retrieval from the context store, ranked choice under a tiny edge model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from nm_toolkit.llm.completion_data import build_completion_dataset, nearest_by_category
from nm_toolkit.llm.context import POI_CATEGORIES, LocationContext, PointOfInterest, synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import BASE, AdapterLM, GenerationLimits
from nm_toolkit.llm.grounding import GroundedChooser, GroundedGeneration, candidates, mentions, softmax
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import EdgeCompleter, EdgeRequest
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.privacy import DEFAULT_POLICY, check_egress

TINY = InitConfig(
    arch="gpt2", preset="tiny", steps=5, batch_size=4, seed=3,
    corpus=CorpusConfig(user_prompts=100, intents=50, telemetry=50, contexts=50, vocabulary_repeats=1),
)  # fmt: skip
WHEN = datetime(2024, 1, 1, 19, tzinfo=UTC)


@pytest.fixture(scope="module")
def city():
    return synthetic_city(seed=4, districts=4, cells_per_district=2, users=10)


@pytest.fixture(scope="module")
def edge(city, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AdapterRegistry]:
    """A tiny base model and a (barely) tuned prompt-completion adapter on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("grounding")
    save_initialised(root / "edge", *initialise_model(TINY))
    registry = AdapterRegistry(root / "adapters")
    train, _ = build_completion_dataset(city, 32, 4, seed=4)
    model, tokenizer = load_causal_lm(root / "edge")
    tuner = LoraFineTuner(LoraTrainConfig(rank=4, alpha=8, epochs=0.5, batch_size=8)).fit(
        model, tokenizer, [(e.input, " " + e.target) for e in train], "pc"
    )
    registry.save(tuner.model_, AdapterCard("pc", "prompt_completion", str(root / "edge")), tuner.losses_)
    yield root / "edge", registry
    torch.set_num_threads(threads)


def test_retrieval_picks_the_nearest_place_of_every_category(city) -> None:
    cell = next(iter(city.cells.values()))
    far, near = (
        PointOfInterest("Farmacia Lontana", "pharmacy", 880, cell.lat, cell.lon, 4.9),
        PointOfInterest("Farmacia Vicina", "pharmacy", 10, cell.lat, cell.lon, 3.1),
    )
    cell = replace(cell, pois=(far, *cell.pois, near))  # unsorted on purpose
    context = LocationContext(cell, "evening", city.profiles["u0001"])
    found = {c.category: c for c in candidates(context, kinds=["nearest"])}
    assert set(found) == set(POI_CATEGORIES)
    for category, candidate in found.items():
        places = [p for p in cell.pois if p.category == category]
        assert candidate.place.distance_m == min(p.distance_m for p in places)
        assert candidate.place.name in candidate.text and f"{candidate.place.distance_m} m" in candidate.text
        assert candidate.text[: candidate.span_chars].endswith(category)
    assert found["pharmacy"].place == near
    assert [(c.category, c.kind) for c in candidates(context, ["gym", "cafe"])] == [
        ("gym", "nearest"), ("gym", "open"), ("cafe", "nearest"), ("cafe", "open")
    ]


def test_candidates_and_targets_pass_the_egress_policy() -> None:
    for seed in (1, 2, 3, 7):
        store = synthetic_city(seed=seed)
        train, test = build_completion_dataset(store, 150, 50, seed=seed)
        for example in train + test:
            context = LocationContext(store.cells[example.cell], example.time_of_day, store.profiles[example.user])
            texts = [example.target] + [c.text for c in candidates(context)]
            for text in texts:
                assert check_egress({"request_id": "r1", "text": text}, context, DEFAULT_POLICY) == [], text


def test_softmax_and_request_words() -> None:
    probabilities = softmax([-1.0, -2.0, -1000.0])
    assert sum(probabilities) == pytest.approx(1.0) and probabilities[0] > probabilities[1] > probabilities[2] >= 0
    assert mentions("any chemist around here?", "pharmacy") and mentions("ATM?", "atm")
    assert not mentions("I need a gymnast", "gym")


@pytest.mark.parametrize("score", ["category", "mean", "sum"])
def test_ranked_choice_returns_a_rendered_candidate_with_its_confidence(city, edge, score: str) -> None:
    lm = AdapterLM.load(edge[0], edge[1])
    completer = EdgeCompleter(lm, city, chooser=GroundedChooser(lm, score=score, lexical_weight=0.5))  # type: ignore[arg-type]
    cells = sorted(city.cells)
    prepared = [completer.prepare(EdgeRequest(text, cell, "u0002", WHEN)) for text, cell in
                zip(("coffee near me", "I need a pharmacy", "car park?"), cells, strict=False)]  # fmt: skip
    choices = completer.choose(prepared)
    assert len(choices) == len(prepared)
    for choice, p in zip(choices, prepared, strict=True):
        assert choice.chosen in choice.candidates and choice.candidates == tuple(candidates(p.context))
        assert 0.0 <= choice.confidence <= 1.0 and 0.0 <= choice.margin <= choice.confidence
        assert sum(choice.probabilities) == pytest.approx(1.0)
        assert choice.scores[choice.best] == max(choice.scores)
    # one batched pass gives what each request scored alone gives
    alone = completer.choose(prepared[1:2])[0]
    assert alone.best == choices[1].best and alone.scores == pytest.approx(choices[1].scores, abs=1e-4)


def test_continuation_logprobs_match_an_unpadded_forward_pass(edge) -> None:
    lm = AdapterLM.load(edge[0], edge[1])
    prompts, conts = ["request: coffee near me\nprompt:", "request: a\nprompt:"], [" Recommend a cafe near me.", " Recommend a gym"]
    batched = lm.continuation_logprobs(prompts, conts, ["pc", BASE])
    for prompt, cont, adapter, row in zip(prompts, conts, ["pc", BASE], batched, strict=True):
        p_ids, c_ids = lm.tokenizer(prompt).input_ids, lm.tokenizer(cont).input_ids
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logits = lm.model(input_ids=ids, adapter_names=[adapter]).logits[0]
        want = torch.log_softmax(logits, -1)[len(p_ids) - 1 : -1].gather(-1, torch.tensor(c_ids)[:, None])[:, 0]
        assert row == pytest.approx(want.tolist(), abs=1e-4) and len(row) == len(c_ids)


def test_shared_prefix_scoring_matches_one_pass_per_row(edge) -> None:
    lm = AdapterLM.load(edge[0], edge[1])
    prompts = ["cell MI-1 | Brera\nrequest: coffee near me\nprompt:", "request: a gym\nprompt:"]
    conts = [[" Recommend a cafe near me.", " Recommend a metro station x y"], [" Recommend a gym", " R", " Recommend a pharmacy near me."]]
    for names in (None, ["pc", BASE]):
        shared = lm.shared_prefix_logprobs(prompts, conts, names)
        flat_names = None if names is None else [n for n, cs in zip(names, conts, strict=True) for _ in cs]
        one = lm.continuation_logprobs([p for p, cs in zip(prompts, conts, strict=True) for _ in cs], [c for cs in conts for c in cs], flat_names)
        got = [row for rows in shared for row in rows]
        assert [len(r) for r in got] == [len(r) for r in one]
        for a, b in zip(got, one, strict=True):
            assert a == pytest.approx(b, abs=1e-4)


def test_grounded_completion_names_the_nearest_place_of_its_chosen_category(city, edge) -> None:
    lm = AdapterLM.load(edge[0], edge[1])
    completer = EdgeCompleter(lm, city, GenerationLimits(max_new_tokens=4))
    _, test = build_completion_dataset(city, 8, 24, seed=9)
    prepared = [completer.prepare(EdgeRequest(e.text, e.cell, e.user, WHEN)) for e in test]
    outputs = completer.complete(prepared)
    assert len(outputs) == len(prepared)
    for output, p in zip(outputs, prepared, strict=True):
        assert isinstance(output, GroundedGeneration) and output.adapter == "pc" and output.finished
        category = output.choice.chosen.category
        nearest = nearest_by_category(p.context.cell.pois)[category]
        assert f"{nearest.name}, {nearest.distance_m} m away" in output.text
        assert output.new_tokens == lm.token_counts([output.text])[0]
        assert check_egress({"request_id": "r", "text": output.text}, p.context) == []
    # the base model and grounded=False keep free generation (bounded by max_new_tokens)
    base = completer.complete([replace(prepared[0], adapter=BASE)])[0]
    assert not isinstance(base, GroundedGeneration) and base.new_tokens <= 4
    free = EdgeCompleter(lm, city, GenerationLimits(max_new_tokens=4), grounded=False).complete(prepared[:2])
    assert all(not isinstance(g, GroundedGeneration) and g.new_tokens <= 4 for g in free)
    mixed = completer.complete([prepared[0], replace(prepared[1], adapter=BASE), prepared[2]])
    assert [isinstance(g, GroundedGeneration) for g in mixed] == [True, False, True]
    assert mixed[0].text == outputs[0].text and mixed[2].text == outputs[2].text
