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
    read_examples,
    read_pairs,
    write_jsonl,
)
from nm_toolkit.llm.context import ContextStore, synthetic_city
from nm_toolkit.llm.metrics import exact_match, lcs_length, rouge_l
from nm_toolkit.llm.training import IGNORE, pack_examples


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
    # the target names the nearest place of the requested category, which the input lists category first
    example = test[0]
    assert store.cells[example.cell].district in example.target and example.category in example.target
    for e in test[:20]:
        name, distance = e.target.rsplit(" is ", 1)[1].removesuffix(" m away.").rsplit(", ", 1)
        assert f"{e.category}: {name}, {distance} m" in e.input, (e.input, e.target)
    # location context stays at the edge: the completed prompt is smaller than the raw context
    context = store.context(example.cell, example.user, datetime.now(UTC))
    assert len(example.target.encode()) < len(cloud_only_payload(example.text, context))
    write_jsonl(tmp_path / "t.jsonl", test)
    assert read_examples(tmp_path / "t.jsonl") == test
    assert read_pairs(tmp_path / "t.jsonl")[0] == (example.input, example.target)


def test_bad_training_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no data file"):
        read_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"input": "x"}\n')
    with pytest.raises(UserError, match="bad.jsonl:1"):
        read_pairs(tmp_path / "bad.jsonl")


def test_packing_joins_whole_examples_up_to_the_length_limit() -> None:
    examples = [([i] * n, [IGNORE] + [i] * (n - 1)) for i, n in enumerate((5, 3, 4, 9, 2, 2, 1), start=1)]
    packed = pack_examples(examples, max_length=9)
    assert [len(ids) for ids, _ in packed] == [8, 4, 9, 5]
    assert all(len(ids) == len(labels) for ids, labels in packed)
    # nothing lost, nothing reordered, no example split across two sequences
    assert [t for ids, _ in packed for t in ids] == [t for ids, _ in examples for t in ids]
    assert [t for _, labels in packed for t in labels] == [t for _, labels in examples for t in labels]
    assert {ids[0] for ids, _ in packed} == {1, 3, 4, 5}
    # an example longer than the limit stays alone rather than being cut
    assert pack_examples([([1] * 12, [1] * 12), ([2], [2])], max_length=9) == [([1] * 12, [1] * 12), ([2], [2])]
