"""Pure parts of the LLM package: metrics, the location context store, the completion data split."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nm_toolkit.errors import UserError
from nm_toolkit.llm.completion_data import (
    TEST_FRAMES,
    TRAIN_FRAMES,
    build_completion_dataset,
    cloud_only_payload,
    comprehensive_prompt,
    nearest_by_category,
    read_examples,
    read_pairs,
    suggested_by_category,
    write_jsonl,
)
from nm_toolkit.llm.context import Cell, ContextStore, LocationContext, PointOfInterest, UserProfile, synthetic_city
from nm_toolkit.llm.metrics import exact_match, lcs_length, rouge_l
from nm_toolkit.llm.privacy import DEFAULT_POLICY, check_egress


def test_rouge_l_matches_hand_computed_values() -> None:
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 -> P = R = 5/6
    assert rouge_l("the cat sat on the mat", "The cat is on the mat.") == pytest.approx(5 / 6)
    assert rouge_l("", "") == 1.0
    assert rouge_l("x", "") == 0.0
    assert exact_match(" a  b ", "a b") and not exact_match("a b", "A b")


def test_context_store_round_trips_and_rejects_unknown_cells(tmp_path: Path) -> None:
    store = synthetic_city(seed=3, districts=4, cells_per_district=2)
    store.save(tmp_path / "ctx.json")
    loaded = ContextStore.load(tmp_path / "ctx.json")
    assert loaded == store
    cell = next(iter(store.cells))
    context = loaded.context(cell, "u0001", datetime(2024, 1, 1, 20, tzinfo=UTC))
    assert context.time_of_day == "evening" and context.profile == store.profiles["u0001"]
    with pytest.raises(UserError, match="unknown cell"):
        loaded.context("nope", None, datetime.now(UTC))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a location context store"):
        ContextStore.load(tmp_path / "bad.json")


def test_split_holds_out_locations_and_phrasings(tmp_path: Path) -> None:
    store = synthetic_city(seed=5)
    train, test = build_completion_dataset(store, 400, 100, seed=5)
    train_districts = {store.cells[e.cell].district for e in train}
    test_districts = {store.cells[e.cell].district for e in test}
    assert train_districts and test_districts and not train_districts & test_districts
    assert not {e.cell for e in train} & {e.cell for e in test}
    frames = {f.split("{noun}")[0] for f in TEST_FRAMES}
    assert all(any(e.text.startswith(f) for f in frames) for e in test)
    assert not set(TRAIN_FRAMES) & set(TEST_FRAMES)
    # the target names the district and the requested category (the place comes from the context store)
    example = test[0]
    assert store.cells[example.cell].district in example.target and example.category in example.target
    # location context stays at the edge: the completed prompt is smaller than the raw context
    context = store.context(example.cell, example.user, datetime.now(UTC))
    assert len(example.target.encode()) < len(cloud_only_payload(example.text, context))
    write_jsonl(tmp_path / "t.jsonl", test)
    assert read_examples(tmp_path / "t.jsonl") == test
    assert read_pairs(tmp_path / "t.jsonl")[0] == (example.input, example.target)


@pytest.mark.parametrize("seed", [1, 2, 5, 11])
def test_every_target_may_leave_the_edge(seed: int) -> None:
    """The completed prompt carries the request, district, time of day and the place's name,
    distance and rating; never the cell id, coordinates, user id, role or preference."""
    store = synthetic_city(seed=seed)
    train, test = build_completion_dataset(store, 300, 100, seed=seed)
    for example in train + test:
        context = LocationContext(store.cells[example.cell], example.time_of_day, store.profiles[example.user])
        assert check_egress({"request_id": "r1", "text": example.target}, context, DEFAULT_POLICY) == [], example.target
        assert example.time_of_day in example.target and example.cell not in example.target


def test_bad_training_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no data file"):
        read_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"input": "x"}\n')
    with pytest.raises(UserError, match="bad.jsonl:1"):
        read_pairs(tmp_path / "bad.jsonl")


def test_the_place_to_suggest_is_the_nearest_that_meets_the_profiles_need() -> None:
    near = PointOfInterest("Trattoria Near", "restaurant", 100, 45.0, 9.0, 4.0)
    veg = PointOfInterest("Osteria Verde", "restaurant", 300, 45.0, 9.0, 4.0, ("vegetarian",))
    farther_veg = PointOfInterest("Bistro Lontano", "restaurant", 600, 45.0, 9.0, 4.0, ("vegetarian", "step-free"))
    cafe = PointOfInterest("Bar Solo", "cafe", 50, 45.0, 9.0, 4.0)
    pois = (near, veg, farther_veg, cafe)
    vegetarian = UserProfile("u", "student", "prefers vegetarian options")
    wheelchair = UserProfile("w", "retiree", "needs step-free access")
    assert suggested_by_category(pois, None) == nearest_by_category(pois) == {"restaurant": near, "cafe": cafe}
    assert suggested_by_category(pois, vegetarian) == {"restaurant": veg, "cafe": cafe}  # no vegetarian cafe: the nearest
    assert suggested_by_category(pois, wheelchair)["restaurant"] == farther_veg
    assert suggested_by_category(pois, UserProfile("x", "runner", "speaks English"))["restaurant"] == near
    context = LocationContext(Cell("MI-1", "Brera", 45.0, 9.0, pois), "evening", vegetarian)
    prompt = comprehensive_prompt("restaurant", context)
    assert "Osteria Verde, 300 m away (4 min on foot)" in prompt and "vegetarian" not in prompt
