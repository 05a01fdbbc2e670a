"""The CRF tagger on a slice of the Lumi data, its save/load round trip, and the CLI (both methods)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from intent.data import Span, load_intents
from intent.evaluation import EntityScores, cross_validate, score
from intent.tagger import SklearnIntentTagger
from nm_toolkit.cli import app

SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pre-trained base model on disk, the stand-in for `nmt model init -o DIR`."""
    from nm_toolkit.llm.corpus import CorpusConfig
    from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = CorpusConfig(user_prompts=100, intents=100, telemetry=50, contexts=50, vocabulary_repeats=1)
    model, tokenizer, losses, facts = initialise_model(InitConfig(preset="tiny", steps=20, batch_size=8, corpus=corpus, seed=1))
    torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("intent-llm") / "base"
    save_initialised(directory, model, tokenizer, losses, facts)
    return directory


def test_entity_scores_need_type_and_text_to_match() -> None:
    scores = EntityScores()
    gold = [Span("operation", 0, 5, "block"), Span("target", 6, 7, "x")]
    scores.add(gold, [Span("operation", 0, 5, "block"), Span("traffic", 6, 7, "x")])
    scores.add(gold, gold)
    report = scores.report()
    assert report["micro"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert report["per_type"]["target"]["recall"] == 0.5 and report["per_type"]["traffic"]["precision"] == 0.0  # type: ignore[index]
    assert abs(report["macro"]["f1"] - (1.0 + 2 / 3 + 0.0) / 3) < 1e-9  # type: ignore[index]
    assert report["exact_match"] == 0.5


def test_cross_validation_on_slice_is_sane() -> None:
    intents = load_intents(SLICE)
    report = cross_validate(SklearnIntentTagger, intents, folds=3)
    assert report["intents"] == len(intents)
    assert 0.5 < report["micro"]["f1"] <= 1.0  # type: ignore[index]
    assert len(report["fold_micro_f1"]) == 3  # type: ignore[arg-type]
    fitted = SklearnIntentTagger().fit(intents)
    assert score(fitted, intents).report()["micro"]["f1"] > 0.95  # type: ignore[index]


def test_preposition_and_shape_separate_times_from_endpoints() -> None:
    """"from 10pm" is a start but "from Xyzzy" is not, though neither name was ever seen."""
    tagger = SklearnIntentTagger().fit(load_intents(SLICE))
    spans = {(s.type, s.text) for s in tagger.predict_spans(["Add firewall from Xyzzy to Plugh from 10pm to 6am"])[0]}
    assert {("start", "from 10pm"), ("end", "to 6am")} <= spans
    assert not {kind for kind, text in spans if "Xyzzy" in text or "Plugh" in text} & {"start", "end"}


def test_save_load_round_trip(tmp_path: Path) -> None:
    intents = load_intents(SLICE)
    tagger = SklearnIntentTagger().fit(intents[:40])
    loaded = SklearnIntentTagger.from_pretrained(tagger.save_pretrained(tmp_path / "m"))
    texts = [i.text for i in intents[40:]]
    assert loaded.predict_spans(texts) == tagger.predict_spans(texts)


def test_cli_train_parse_eval(tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(app, ["intent", "train", "--input", str(SLICE), "-o", str(model), "--method", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["intent", "parse", "block netflix traffic for students", "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["kind"] in ("operator", "needs_clarification")
    if parsed["kind"] == "operator":
        assert parsed["nile"].startswith("define intent ")
    result = runner.invoke(app, ["intent", "eval", "--train", str(SLICE), "--test", str(SLICE), "--method", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["best"] == "sklearn" and report["methods"]["sklearn"]["mode"] == "train_test"


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["intent", "eval", "--input", str(tmp_path / "missing.json")])
    assert result.exit_code != 0 and "no intents file" in str(result.exception)
    result = runner.invoke(app, ["intent", "parse", "x", "--model", str(tmp_path)])
    assert "nmt intent train" in str(result.exception)


def test_cli_scores_both_methods_side_by_side(tmp_path: Path, tiny_base: Path) -> None:
    """`--method sklearn,llm` scores both on the same split; the LLM starts from --base-model."""
    data = json.loads(SLICE.read_text())
    train, test = tmp_path / "train.json", tmp_path / "test.json"
    train.write_text(json.dumps({"intents": data["intents"][:16]}))
    test.write_text(json.dumps({"intents": data["intents"][16:22]}))
    args = ["intent", "eval", "--train", str(train), "--test", str(test), "--method", "sklearn,llm", "--base-model", str(tiny_base)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["methods"]) == {"sklearn", "llm"}
    for method in ("sklearn", "llm"):
        scores = report["methods"][method]
        assert scores["intents"] == 6 and 0.0 <= scores["micro"]["f1"] <= 1.0
        assert scores["fit_seconds"] > 0 and scores["predict_ms_per_intent"] > 0
    support = sum(v["support"] for v in report["methods"]["sklearn"]["per_type"].values())
    assert support == sum(len(item.spans) for item in load_intents(test))


def test_base_model_must_be_a_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["intent", "eval", "--input", str(SLICE), "--method", "llm", "--base-model", str(tmp_path)])
    assert result.exit_code != 0 and "nmt model init" in str(result.exception)
