"""The everyday-words development set of service classes is what it says: balanced, valid, and
disjoint from what the service-class adapter is trained on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nm_toolkit.llm.service_class import _ACTIVITIES, CLASSES, labelled_prompts, read_labelled

DEVSET = Path(__file__).parent / "data" / "service_class_ordinary.jsonl"


def test_the_development_set_is_balanced_valid_and_never_trained_on() -> None:
    rows = read_labelled(DEVSET)
    assert len(rows) == 140
    assert all(kind in CLASSES for _, kind in rows), [r for r in rows if r[1] not in CLASSES]
    assert Counter(kind for _, kind in rows) == dict.fromkeys(CLASSES, 20)
    texts = [" ".join(t.lower().split()) for t, _ in rows]
    assert all(texts) and len(set(texts)) == len(texts), [t for t, n in Counter(texts).items() if n > 1]
    trained = [t.lower() for t, _ in labelled_prompts(4000, "train")]
    assert not [text for text in texts if any(text in prompt for prompt in trained)]
    activities = {a.lower() for pair in _ACTIVITIES.values() for side in pair for a in side}
    assert not [(text, a) for text in texts for a in activities if a in text]
