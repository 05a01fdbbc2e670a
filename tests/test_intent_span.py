"""The span taggers and their vote: dynamic programmes against brute force, fitting, persistence, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from intent.data import LabelledIntent, Span, load_intents
from intent.ensemble import VotingIntentTagger, majority_spans
from intent.evaluation import cross_validate, score
from intent.methods import factory, load
from intent.span import (
    SpanIntentTagger,
    SpanTaggerConfig,
    best_segmentation,
    candidate_spans,
    log_partition,
)
from nm_toolkit.cli import app
from nm_toolkit.errors import UserError

SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"


def segmentations(n: int, max_len: int) -> list[list[tuple[int, int]]]:
    """Every set of non-overlapping spans of 1..max_len tokens in n tokens (brute force)."""
    spans = candidate_spans(n, max_len)
    return [
        list(chosen)
        for k in range(len(spans) + 1)
        for chosen in itertools.combinations(spans, k)
        if all(a[1] <= b[0] for a, b in itertools.pairwise(chosen))
    ]


def test_candidate_spans_are_every_short_range() -> None:
    assert candidate_spans(3, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert candidate_spans(0, 4) == []


@pytest.mark.parametrize("seed", range(5))
def test_best_segmentation_is_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, max_len = 6, 3
    scores = np.full((n, max_len), -np.inf)
    for i, j in candidate_spans(n, max_len):
        scores[j - 1, j - i - 1] = rng.normal()
    total = lambda seg: sum(scores[j - 1, j - i - 1] for i, j in seg)
    best = max(segmentations(n, max_len), key=total)
    assert math.isclose(total(best_segmentation(scores)), total(best))
    assert best_segmentation(np.full((n, max_len), -1.0)) == []


def test_log_partition_sums_every_segmentation() -> None:
    rng = np.random.default_rng(0)
    n, max_len = 5, 3
    scores = np.full((1, n, max_len), -1e4)
    for i, j in candidate_spans(n, max_len):
        scores[0, j - 1, j - i - 1] = rng.normal()
    expected = math.log(sum(math.exp(sum(scores[0, j - 1, j - i - 1] for i, j in seg)) for seg in segmentations(n, max_len)))
    got = log_partition(torch.tensor(scores), torch.tensor([n]))
    assert math.isclose(float(got[0]), expected, rel_tol=1e-9)
    # a shorter sentence in the same batch only sums its own tokens
    assert math.isclose(float(log_partition(torch.tensor(scores), torch.tensor([1]))[0]), math.log(1 + math.exp(scores[0, 0, 0])))


@pytest.mark.parametrize("method", ["semicrf", "spanlr"])
def test_span_taggers_learn_the_slice(method: str) -> None:
    intents = load_intents(SLICE)
    report = cross_validate(factory(method), intents, folds=3)
    assert report["intents"] == len(intents) and 0.5 < report["micro"]["f1"] <= 1.0  # type: ignore[index]
    fitted = factory(method)().fit(intents)
    assert isinstance(fitted, SpanIntentTagger)
    assert score(fitted, intents).report()["micro"]["f1"] > 0.95  # type: ignore[index]
    assert fitted.max_span_tokens_ == max(len(s.text.split()) for i in intents for s in i.spans)


def test_spans_keep_the_preposition_convention() -> None:
    """"from 10pm" is a start and "to 6am" an end, preposition included, though neither was seen."""
    tagger = SpanIntentTagger().fit(load_intents(SLICE))
    spans = {(s.type, s.text) for s in tagger.predict_spans(["Add firewall from Xyzzy to Plugh from 10pm to 6am"])[0]}
    assert {("start", "from 10pm"), ("end", "to 6am")} <= spans


def test_per_span_margin_trades_precision_for_recall() -> None:
    """A larger margin lifts every type's log-odds against "none": more spans, never fewer."""
    intents = load_intents(SLICE)
    counts = []
    for margin in (0.0, 2.0, 4.0):
        tagger = SpanIntentTagger(SpanTaggerConfig(objective="per_span", margin=margin)).fit(intents[:40])
        counts.append(sum(len(s) for s in tagger.predict_spans([i.text for i in intents[40:]])))
    assert counts[0] < counts[2] and counts == sorted(counts)


@pytest.mark.parametrize("method", ["semicrf", "spanlr", "vote"])
def test_save_load_round_trip(tmp_path: Path, method: str) -> None:
    intents = load_intents(SLICE)
    tagger = factory(method)().fit(intents[:40])
    directory = tagger.save_pretrained(tmp_path / "m")  # type: ignore[attr-defined]
    assert not list(directory.rglob("*.pkl"))
    loaded = load(directory)
    assert type(loaded) is type(tagger)
    texts = [i.text for i in intents[40:]] + [""]
    assert loaded.predict_spans(texts) == tagger.predict_spans(texts)


def test_training_needs_labelled_spans(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no labelled spans"):
        SpanIntentTagger().fit([LabelledIntent("block netflix", ())])
    with pytest.raises(UserError, match="--method semicrf"):
        SpanIntentTagger.from_pretrained(tmp_path)


def test_majority_keeps_spans_most_members_predict() -> None:
    a, b, c = Span("operation", 0, 5, "block"), Span("traffic", 6, 13, "netflix"), Span("service", 6, 13, "netflix")
    assert majority_spans([[a, b], [a, c], [b]]) == [a, b]
    assert majority_spans([[a], [b]]) == []  # a tie is not a majority
    assert majority_spans([[a, a], [], []]) == []  # one member's duplicate is one vote


def test_vote_members_are_checked() -> None:
    intents = load_intents(SLICE)[:10]
    for members in (("sklearn", "llm"), ("semicrf", "semicrf"), ()):
        with pytest.raises(UserError, match="vote members"):
            VotingIntentTagger(members).fit(intents)


def test_vote_is_the_default_method(tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(app, ["intent", "train", "--input", str(SLICE), "-o", str(model), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "vote"
    result = runner.invoke(app, ["intent", "parse", "block netflix traffic for students", "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["intent", "eval", "--input", str(SLICE), "--folds", "3", "--method", "semicrf,sklearn", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["methods"]) == {"semicrf", "sklearn"}
