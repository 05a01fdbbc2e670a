"""The everyday-words development set of service classes is what it says: balanced, valid, and
disjoint from what the service-class adapter is trained on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nm_toolkit.llm.service_class import _ACTIVITIES, LABELS, labelled_prompts, read_labelled

DEVSET = Path(__file__).parent / "data" / "service_class_ordinary.jsonl"


def test_the_development_set_is_balanced_valid_and_never_trained_on() -> None:
    rows = read_labelled(DEVSET)
    assert len(rows) == 140 and set(Counter(k for _, k in rows).values()) == {20}
    assert {k for _, k in rows} == set(LABELS)
    texts = [t.lower() for t, _ in rows]
    assert len(set(texts)) == len(texts)
    trained = {t.lower() for t, _ in labelled_prompts(4000, "train")}
    activities = {a.lower() for pair in _ACTIVITIES.values() for side in pair for a in side}
    assert not any(text in prompt for text in texts for prompt in trained)
    assert not any(activity in text for activity in activities for text in texts)
