"""Issue 25: the policy-prose development set, synthetic prose for training, abstention in the
scores, and clauses the extractor leaves unread coming back as clarifications."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from intent.clauses import split_clauses, unread_clauses
from intent.data import LabelledIntent, Span, load_intents, tokenize
from intent.evaluation import Abstention, EntityScores, score
from intent.prose import ProseConfig, policy_prose
from intent.schema import ENTITY_TYPES
from nm_toolkit.cli import app

DATA = Path(__file__).parent / "data"
DEV = DATA / "intent_policy_prose_dev.json"
HOLDOUT = DATA / "intent_policy_prose_holdout.json"


def test_the_development_set_is_policy_prose_in_the_alpha_format() -> None:
    intents = load_intents(DEV)  # the alpha file's reader: parts concatenate to the text, known types only
    assert len(intents) >= 100
    empty = sum(not item.spans for item in intents)
    assert 0.10 <= empty / len(intents) <= 0.15  # sentences with nothing to extract
    assert sum(len(item.spans) for item in intents) / len(intents) >= 3  # several entities per sentence
    assert sum(len(tokenize(item.text)) for item in intents) / len(intents) >= 12  # prose, not commands
    for item in intents:
        assert all(item.text[s.start : s.end] == s.text for s in item.spans)
    raw = json.loads(DEV.read_text())["intents"]
    assert all(p["alias"] == p["entity_type"][1:] for item in raw for p in item["parts"] if "entity_type" in p)


def test_synthetic_prose_is_labelled_by_construction_and_never_a_development_sentence() -> None:
    prose = policy_prose(ProseConfig(sentences=300, seed=3))
    assert prose == policy_prose(ProseConfig(sentences=300, seed=3))  # deterministic
    assert len({item.text for item in prose}) == 300
    for item in prose:
        assert all(item.text[s.start : s.end] == s.text and s.type in ENTITY_TYPES for s in item.spans)
        assert item.text[:1].isupper() and item.text.endswith(".")
    assert 0.05 < sum(not item.spans for item in prose) / len(prose) < 0.25
    dev = {item.text.lower() for item in load_intents(DEV)}
    assert not dev & {item.text.lower() for item in policy_prose(ProseConfig(sentences=2000))}


def test_the_holdout_is_prose_of_its_own() -> None:
    """The holdout (written after the development set's choices) shares no sentence with the
    development set or with the synthetic prose, and is in the same format."""
    holdout = load_intents(HOLDOUT)
    assert len(holdout) >= 40 and sum(len(item.spans) for item in holdout) >= 140
    assert all(item.text[s.start : s.end] == s.text and s.type in ENTITY_TYPES for item in holdout for s in item.spans)
    texts = {item.text.lower() for item in holdout}
    assert len(texts) == len(holdout)
    assert not texts & {item.text.lower() for item in load_intents(DEV)}
    assert not texts & {item.text.lower() for item in policy_prose(ProseConfig(sentences=2000))}


def test_synthetic_operations_follow_the_alpha_conventions() -> None:
    """Operations are composed from a modal or an auxiliary and many verbs; the verb after "allowed
    to" stays out of the operation ("[Staff] [is allowed to] access [ftp]"); "Connections" is traffic."""
    from intent.prose import DUTIES, _third_person

    prose = policy_prose(ProseConfig(sentences=1500))
    operations = [s.text for item in prose for s in item.spans if s.type == "operation"]
    assert len(set(operations)) > 300  # the construction, not a list of phrases
    assert not [op for op in operations if re.search(r"\b(allowed|permitted|required) to \w", op)]
    assert any(op.endswith(" allowed to") for op in operations)
    connections = [s.type for item in prose for s in item.spans if s.text == "Connections"]
    assert connections and set(connections) == {"traffic"}
    assert any(not item.spans and item.text.endswith(f" {duty}.") for item in prose for duty in DUTIES)  # a modal verb, nothing to extract
    assert [_third_person(v) for v in ("carry", "set up", "refuse", "relay", "access", "block")] == [
        "carries", "sets up", "refuses", "relays", "accesses", "blocks",
    ]  # fmt: skip


class Fixed:
    """An extractor that stands by ``kept`` and abstains on ``doubtful``."""

    def __init__(self, kept: list[Span], doubtful: list[Span]) -> None:
        self.kept, self.doubtful = kept, doubtful

    def predict_spans(self, texts: list[str]) -> list[list[Span]]:
        return [self.kept + self.doubtful for _ in texts]

    def predict_abstaining(self, texts: list[str]) -> list[tuple[list[Span], list[Abstention]]]:
        return [(self.kept, [Abstention(s, "unsure") for s in self.doubtful]) for _ in texts]


def test_abstaining_never_raises_the_score() -> None:
    text = "Guests may not use Steam on the guest network."
    intent = LabelledIntent(text, (
        Span("target", 0, 6, "Guests"), Span("operation", 7, 18, "may not use"), Span("service", 19, 24, "Steam"),
    ))  # fmt: skip
    right, wrong = Span("service", 19, 24, "Steam"), Span("target", 25, 45, "on the guest network")
    op = Span("operation", 7, 18, "may not use")
    answered = score(Fixed([op, right, wrong], []), [intent]).report()
    abstained_right = score(Fixed([op, wrong], [right]), [intent]).report()
    abstained_wrong = score(Fixed([op, right], [wrong]), [intent]).report()
    assert abstained_right["micro"]["f1"] < answered["micro"]["f1"]  # a right span abstained on is a miss
    assert abstained_wrong["micro"]["f1"] == answered["micro"]["f1"]  # a wrong one is still an error
    assert abstained_wrong["abstain_rate"] == 1 / 3 and abstained_wrong["answered_precision"] == 1.0
    assert abstained_right["abstained_right"] == 1 and answered["abstain_rate"] == 0.0
    scores = EntityScores()
    scores.add([right], [], [right])
    assert scores.report()["micro"]["f1"] == 0.0 and scores.report()["exact_match"] == 0.0


def test_the_scores_say_which_sentences_make_an_intent() -> None:
    """A rule whose answered spans compile counts as compiled; a sentence with nothing to extract
    that compiles all the same is a false intent; spans abstained on make no intent."""
    rule = "Guests may not use Steam on the guest network."
    spans = [Span("target", 0, 6, "Guests"), Span("operation", 7, 18, "may not use"), Span("service", 19, 24, "Steam")]
    labelled, empty = LabelledIntent(rule, tuple(spans)), LabelledIntent(rule, ())
    report = score(Fixed(spans, []), [labelled, empty]).report()
    assert report["compiled_rate"] == 1.0 and report["false_intent_rate"] == 1.0
    abstained = score(Fixed(spans[:1], spans[1:]), [labelled, empty]).report()
    assert abstained["compiled_rate"] == 0.0 and abstained["false_intent_rate"] == 0.0


def test_clauses_and_conditions() -> None:
    text = "If abuse is reported, guests lose access to the VPN; the service desk answers complaints."
    clauses = split_clauses(text)
    assert [(c.text, c.condition) for c in clauses] == [
        ("If abuse is reported", True), ("guests lose access to the VPN", False), ("the service desk answers complaints", False),
    ]  # fmt: skip
    assert all(text[c.start : c.end] == c.text for c in clauses)
    guests = Span("target", text.index("guests"), text.index("guests") + 6, "guests")
    unread = unread_clauses(text, [guests])
    assert [clause for clause, _ in unread] == ["If abuse is reported", "the service desk answers complaints"]
    assert "condition" in unread[0][1] and "no network entity" in unread[1][1]
    timed = "From 10pm to 6am, gaming is blocked."
    spans = [Span("start", 0, 9, "From 10pm"), Span("end", 10, 16, "to 6am"), Span("traffic", 18, 24, "gaming")]
    assert unread_clauses(timed, spans) == []  # a time window is a condition Nile has


def test_an_unread_condition_comes_back_as_a_clarification_with_the_clause() -> None:
    from intent.methods import parse_operator_intents

    text = "If abuse is reported, block Steam for guests"
    start = text.index("block")
    spans = [Span("operation", start, start + 5, "block"), Span("service", start + 6, start + 11, "Steam"), Span("target", start + 12, len(text), "for guests")]
    result = parse_operator_intents(Fixed(spans, []), [text])[0]
    assert result.kind == "needs_clarification" and result.span == "If abuse is reported" and "condition" in result.reason
    assert parse_operator_intents(Fixed([Span(s.type, s.start - start, s.end - start, s.text) for s in spans], []), [text[start:]])[0].kind == "operator"


def test_eval_reports_every_method_with_abstain_rate_and_time(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["intent", "eval", "--train", str(DATA / "nile_intents_slice.json"), "--test", str(DEV), "--method", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["methods"]["sklearn"]
    assert report["intents"] == len(load_intents(DEV)) and 0.0 < report["abstain_rate"] < 0.5
    # what it abstains on is wronger than what it stands by
    assert report["answered_precision"] > report["micro"]["precision"] and report["predict_ms_per_intent"] > 0
    assert 0.0 < report["compiled_rate"] <= 1.0 and 0.0 <= report["false_intent_rate"] <= 1.0
    table = CliRunner().invoke(app, ["intent", "eval", "--train", str(DATA / "nile_intents_slice.json"), "--test", str(DEV), "--method", "sklearn"], env={"COLUMNS": "120"})
    assert all(row in table.output for row in ("micro-F1", "F1 operation", "abstain rate", "compiles to an intent", "ms per sentence"))


def test_a_cached_builtin_extractor_from_another_recipe_is_retrained(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An upgrade must not keep serving the extractor cached before training changed (issue 25)."""
    from intent import builtin
    from intent.methods import load

    monkeypatch.setattr(builtin, "BUILTIN_METHOD", "sklearn")  # the recipe's logic, at a tenth of the vote's cost
    directory = tmp_path / "intent-extractor"
    directory.mkdir()
    (directory / "stale-weights").write_text("from before recipes were recorded")
    notes: list[str] = []
    assert builtin.ensure_builtin_extractor(directory, notes.append) == directory
    assert builtin.recipe_of(directory) == builtin.RECIPE and not (directory / "stale-weights").exists()
    assert "changed since it was cached" in notes[0] and load(directory).predict_spans(["block netflix for guests"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intent-extractor"]  # nothing left beside it
    builtin.ensure_builtin_extractor(directory, notes.append)
    assert len(notes) == 1  # the same recipe: reused
