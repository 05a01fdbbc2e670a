"""Issue 14: names of network things (intent.lexicon.TERMS) as gazetteer features and augmentation
values."""

from __future__ import annotations

from intent.augment import AugmentConfig, augment
from intent.data import tokenize
from intent.lexicon import TERMS, term_matches, word_classes
from tests.test_intent_grouped import labelled


def test_term_matches_take_the_longest_name_left_to_right() -> None:
    words = "add deep packet inspection and a traffic shaper , cap the download rate".split()
    assert term_matches(words) == [(1, 4, "middlebox"), (6, 8, "middlebox"), (11, 13, "qos_metric")]
    assert term_matches("block all traffic".split()) == []


def test_lexicon_classes_do_not_mix_constraints_places_and_middleboxes() -> None:
    """"limit" is a constraint 21 times in the alpha file and a metric twice; "gateway" an endpoint
    every time; "data" was a place through "data center" split into words."""
    assert "qos_metric" not in word_classes("limit") and "verb_qos" in word_classes("limit")
    assert "middlebox" not in word_classes("gateway") and "place" in word_classes("gateway")
    assert "place" not in word_classes("data") and "place" not in word_classes("center")
    assert "qos_metric" in word_classes("quota")


def test_span_and_token_features_mark_names_of_network_things() -> None:
    from intent.span import SentenceView, span_features
    from intent.tagger import token_features

    tokens = tokenize("add a traffic shaper for the dorms")
    view = SentenceView.of(tokens)
    assert view.terms == ((2, 4, "middlebox"),)
    assert "term=middlebox" in span_features(view, 2, 4)
    assert "part_of_term=middlebox" in span_features(view, 3, 4)
    assert "has_term=middlebox" in span_features(view, 1, 4)
    assert "cuts_term" in span_features(view, 3, 5)
    features = token_features(tokens)
    assert "term=middlebox|B" in features[2] and "term=middlebox|I" in features[3]
    assert not any(name.startswith("term=") for name in features[5])


def test_augmentation_puts_other_names_of_the_type_into_a_span() -> None:
    intents = [labelled("add a firewall for the dorms", ("operation", "add"), ("middlebox", "firewall"), ("target", "for the dorms"))]
    out = augment(intents, AugmentConfig(copies=30, p_swap=0.0, p_word=1.0, rare_below=0))
    boxes = {s.text for item in out[1:] for s in item.spans if s.type == "middlebox"}
    assert len(boxes) > 10 and boxes <= TERMS["middlebox"] and any(" " in box for box in boxes)
    for item in out:
        assert all(item.text[s.start : s.end] == s.text for s in item.spans)



def test_a_span_tagger_finds_whole_middlebox_names_the_labelled_slice_never_shows() -> None:
    """The slice's middleboxes are DPI, monitor and traffic shaper; trained on it, the tagger
    before TERMS read no middlebox at all in these sentences."""
    from pathlib import Path

    from intent.augment import AugmentedExtractor
    from intent.data import load_intents
    from intent.span import SpanIntentTagger, SpanTaggerConfig

    tagger = AugmentedExtractor(SpanIntentTagger(SpanTaggerConfig(objective="per_span"))).fit(load_intents(Path(__file__).parent / "data" / "nile_intents_slice.json"))
    texts = ["Add an intrusion prevention system from the Internet to the Labs", "please add a load balancer to the servers"]
    found = [[s.text for s in spans if s.type == "middlebox"] for spans in tagger.predict_spans(texts)]  # type: ignore[attr-defined]
    assert found == [["intrusion prevention system"], ["load balancer"]]
