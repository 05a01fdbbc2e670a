"""The scikit-learn tagger on a slice of the Lumi data, its save/load round trip, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from intent.data import load_intents
from intent.evaluation import cross_validate, score
from intent.tagger import SklearnIntentTagger
from nm_toolkit.cli import app

SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"


def test_cross_validation_on_slice_is_sane() -> None:
    intents = load_intents(SLICE)
    report = cross_validate(SklearnIntentTagger, intents, folds=3)
    assert report["intents"] == len(intents)
    assert 0.5 < report["micro"]["f1"] <= 1.0  # type: ignore[index]
    assert len(report["fold_micro_f1"]) == 3  # type: ignore[arg-type]
    fitted = SklearnIntentTagger().fit(intents)
    assert score(fitted, intents).report()["micro"]["f1"] > 0.95  # type: ignore[index]


def test_save_load_round_trip(tmp_path: Path) -> None:
    intents = load_intents(SLICE)
    tagger = SklearnIntentTagger().fit(intents[:40])
    loaded = SklearnIntentTagger.from_pretrained(tagger.save_pretrained(tmp_path / "m"))
    texts = [i.text for i in intents[40:]]
    assert loaded.predict_spans(texts) == tagger.predict_spans(texts)


def test_cli_train_parse_eval(tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(app, ["intent", "train", "--input", str(SLICE), "-o", str(model), "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["intent", "parse", "block netflix traffic for students", "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["kind"] in ("operator", "needs_clarification")
    if parsed["kind"] == "operator":
        assert parsed["nile"].startswith("define intent ")
    result = runner.invoke(app, ["intent", "eval", "--train", str(SLICE), "--test", str(SLICE), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["best"] == "sklearn" and report["methods"]["sklearn"]["mode"] == "train_test"


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["intent", "eval", "--input", str(tmp_path / "missing.json")])
    assert result.exit_code != 0 and "no intents file" in str(result.exception)
    result = runner.invoke(app, ["intent", "parse", "x", "--model", str(tmp_path)])
    assert "nmt intent train" in str(result.exception)
