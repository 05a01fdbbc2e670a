"""Issue 14: the grouped split, the error anatomy, the lexicon, augmentation, and what the extractor
does not know coming back as a clarification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intent.augment import AugmentConfig, augment
from intent.data import LabelledIntent, Span, load_intents
from intent.evaluation import Abstention, TrainingKnowledge, skeleton, split_folds, split_groups, word_clusters
from intent.lexicon import word_classes
from nm_toolkit.cli import app

SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"


def labelled(text: str, *parts: tuple[str, str]) -> LabelledIntent:
    spans = []
    for kind, value in parts:
        start = text.index(value)
        spans.append(Span(kind, start, start + len(value), value))
    return LabelledIntent(text, tuple(spans))


def test_skeleton_is_the_entity_types_in_text_order() -> None:
    a = labelled("Block YouTube for students", ("operation", "Block"), ("service", "YouTube"), ("target", "for students"))
    b = labelled("please block Netflix for the guests", ("operation", "block"), ("service", "Netflix"), ("target", "for the guests"))
    assert skeleton(a) == skeleton(b) == "operation service target"
    assert skeleton(LabelledIntent("hello", ())) == "(none)"


def test_word_clusters_put_shared_wording_together() -> None:
    texts = ["block youtube for students", "block youtube for guests", "set quota to 10 gb per week", "set quota to 5 gb per week"]
    clusters = word_clusters(texts, 2)
    assert clusters[0] == clusters[1] != clusters[2] == clusters[3]
    assert word_clusters(texts, 2) == clusters  # deterministic


@pytest.mark.parametrize("split", ["grouped", "skeleton"])
def test_grouped_folds_keep_each_group_on_one_side(split: str) -> None:
    intents = load_intents(SLICE)
    groups = split_groups(intents, 3, split)
    folds = split_folds(intents, 3, 0, split)
    assert sorted(i for _, test in folds for i in test) == list(range(len(intents)))  # each intent scored once
    for train, test in folds:
        assert not {str(groups[i]) for i in train} & {str(groups[i]) for i in test}
    assert folds == split_folds(intents, 3, 0, split)


def test_random_folds_are_unchanged_and_unknown_split_is_refused() -> None:
    intents = load_intents(SLICE)
    from sklearn.model_selection import KFold

    expected = [(list(a), list(b)) for a, b in KFold(3, shuffle=True, random_state=0).split(intents)]
    assert split_folds(intents, 3, 0) == expected
    with pytest.raises(Exception, match="unknown split"):
        split_folds(intents, 3, 0, "bogus")


def test_missed_entities_are_sorted_by_cause() -> None:
    train = [
        labelled("block youtube for students", ("operation", "block"), ("service", "youtube"), ("target", "for students")),
        labelled("add a firewall to labs", ("operation", "add"), ("middlebox", "firewall"), ("destination", "to labs")),
        labelled("add a dpi", ("middlebox", "dpi")),
    ]
    knowledge = TrainingKnowledge(train)
    assert knowledge.cause(Span("service", 0, 7, "netflix")) == "unseen_words"
    assert knowledge.cause(Span("target", 0, 7, "to labs")) == "label_convention"  # a destination in training
    assert knowledge.cause(Span("operation", 0, 3, "add")) == "label_convention"  # unlabelled in "add a dpi"
    assert knowledge.cause(Span("service", 0, 7, "youtube")) == "unseen_structure"


def test_lexicon_knows_campus_groups_and_places() -> None:
    assert "group" in word_classes("visitors") and "group" in word_classes("students")
    assert "place" in word_classes("dorms") and "place" in word_classes("library")
    assert "service" in word_classes("hulu") and "protocol" in word_classes("ldap")


def test_augmented_intents_keep_their_labels_consistent() -> None:
    intents = load_intents(SLICE)
    out = augment(intents, AugmentConfig(copies=2, seed=3))
    assert out[: len(intents)] == intents and len(out) > len(intents)
    assert len({item.text for item in out}) == len(out)
    for item in out[len(intents) :]:
        assert item.spans
        for span in item.spans:
            assert item.text[span.start : span.end] == span.text and span.text.strip() == span.text
    assert out == augment(intents, AugmentConfig(copies=2, seed=3))
    new_words = {w.lower() for item in out for w in item.text.split()} - {w.lower() for item in intents for w in item.text.split()}
    assert new_words  # values from outside the file


def test_cli_eval_reports_the_split_and_the_error_anatomy() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["intent", "eval", "--input", str(SLICE), "--folds", "3", "--method", "sklearn", "--split", "grouped", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["methods"]["sklearn"]
    assert report["split"] == "grouped" and report["intents"] == 60
    assert set(report["missed_by_cause"]) <= {"unseen_words", "label_convention", "unseen_structure"}
    assert sum(report["missed_by_cause"].values()) == sum(int(s["support"] * (1 - s["recall"]) + 0.5) for s in report["per_type"].values())
    result = runner.invoke(app, ["intent", "eval", "--input", str(SLICE), "--method", "sklearn", "--split", "bogus"])
    assert result.exit_code != 0 and "grouped" in str(result.exception)


def test_doubts_come_back_as_clarifications_with_the_reason() -> None:
    from intent.ensemble import VotingIntentTagger
    from intent.methods import parse_operator_intents, unknown_values

    spans = [Span("service", 6, 13, "Zorblx"), Span("service", 0, 7, "youtube"), Span("protocol", 0, 3, "ssh")]
    assert unknown_values(spans, {"block"}) == ["'Zorblx' read as a service, but it is not one the extractor knows"]
    assert unknown_values(spans, None) == []

    class Fixed:
        def __init__(self, spans: list[Span]) -> None:
            self.spans = spans

        def predict_spans(self, texts: list[str]) -> list[list[Span]]:
            return [self.spans for _ in texts]

    text = "block traffic to labs"
    op, dest = Span("operation", 0, 5, "block"), Span("destination", 14, 21, "to labs")
    vote = VotingIntentTagger()
    vote.members_ = [Fixed([op, dest]), Fixed([op, dest]), Fixed([op])]
    (kept, abstained), = vote.predict_abstaining([text])
    assert kept == [op] and abstained == [Abstention(dest, "'to labs' read as destination, but the spanlr member reads no entity there")]
    assert vote.predict_spans([text]) == [[op, dest]]
    result = parse_operator_intents(vote, [text])[0]
    assert result.kind == "needs_clarification" and "reads no entity there" in result.reason and result.span == "to labs"
    vote.members_ = [Fixed([op, dest]), Fixed([op, dest]), Fixed([op, Span("target", 14, 21, "to labs")])]
    assert vote.predict_abstaining([text]) == [([op, dest], [])]  # a rival reading is no abstention: the majority is right 7 times in 8
    assert parse_operator_intents(vote, [text])[0].kind == "operator"


def test_an_unknown_name_read_as_nothing_is_a_doubt() -> None:
    """"Block Zorblx for all contractors": the name is in no span, so the intent would silently
    be about all of the contractors' traffic; it comes back as a clarification instead."""
    from intent.methods import unread_names

    text = "Block Zorblx for all contractors"
    spans = [Span("operation", 0, 5, "Block"), Span("group", 24, 32, "contractors")]
    assert unread_names(text, spans, {"block", "for", "all"}) == [
        "'Zorblx' looks like a name the extractor does not know, and it read it as nothing"
    ]
    assert unread_names(text, [*spans, Span("service", 6, 12, "Zorblx")], {"block"}) == []  # read: unknown_values judges it
    assert unread_names("Block YouTube for guests", [spans[0]], set()) == []  # a name the lexicon knows
    assert unread_names("block zorblx please", [], set()) == []  # no capital: not taken for a name
    assert unread_names(text, spans, None) == []


def test_a_clause_subject_is_not_the_object_of_the_infinitive_to() -> None:
    """"to ensure students ..." made "students" look like "to students" (a target) to both taggers."""
    from intent.data import tokenize
    from intent.span import SentenceView, opens_clause
    from intent.tagger import last_prepositions

    words = "add a dpi to ensure all students from the labs are not , for guests".split()
    preps = dict(zip(words, last_prepositions(words), strict=False))
    assert preps["students"] == "<none>" and preps["labs"] == "from" and preps["guests"] == "for"
    view = SentenceView.of(tokenize("Students shall download, to ensure all students from labs, not to students"))
    opening = [w for k, w in enumerate(view.words) if opens_clause(view, k)]
    assert opening == ["students", "to", "all", "students", "not"]  # at the start, after ",", after "ensure" (determiner aside)


def test_lexicon_knows_the_populations_operators_name() -> None:
    for word in "students guests faculty staff researchers visitors contractors employees iot devices".split():
        assert "group" in word_classes(word), word
    for word in ("labs", "dorms"):
        assert "place" in word_classes(word)
    assert "auxiliary" not in word_classes("am")  # "6am" is a time


def test_span_scores_are_the_feature_matrix_times_the_weights() -> None:
    """Prediction sums the weights of each candidate's features directly; it must equal the
    sparse product that training optimised."""
    import numpy as np

    from intent.span import SpanIntentTagger, SpanTaggerConfig, featurise

    tagger = SpanIntentTagger(SpanTaggerConfig(objective="per_span")).fit(load_intents(SLICE)[:20])
    candidates = featurise("Zorblx shall block netflix for all contractors from 10pm", tagger.max_span_tokens_)
    expected = tagger._matrix(candidates) @ tagger.weights_
    assert np.allclose(tagger._scores(candidates), expected, atol=1e-5)


def test_intents_of_rare_types_get_more_variants() -> None:
    common = [labelled(f"block youtube for students {k}", ("operation", "block"), ("service", "youtube"), ("target", f"for students {k}")) for k in range(12)]
    rare = labelled("Students shall use ssh", ("group", "Students"), ("protocol", "ssh"))

    def variants(config: AugmentConfig) -> int:
        return sum({s.type for s in item.spans} == {"group", "protocol"} for item in augment([*common, rare], config)[13:])

    assert variants(AugmentConfig(copies=1, p_swap=0.0, p_word=1.0, rare_below=0)) <= 1  # no type is rare: one variant at most
    assert variants(AugmentConfig(copies=1, p_swap=0.0, p_word=1.0, rare_below=10, rare_copies=6)) > 3


def test_embedding_clusters_come_from_the_installed_wheel_and_are_stable() -> None:
    """Population nouns share a cluster, tokens without letters have none, and the committed
    centroids are what the clustering gives again (nothing downloaded: the files are the wheel's)."""
    import numpy as np
    from safetensors.numpy import load_file

    from intent.embed import CENTROIDS_FILE, NO_CLUSTER, word_cluster

    assert word_cluster("students") == word_cluster("professors") != word_cluster("firewall")
    assert word_cluster("10") == word_cluster(",") == NO_CLUSTER
    centroids = load_file(str(CENTROIDS_FILE))["centroids"]
    assert centroids.shape == (128, 256) and np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-3)
