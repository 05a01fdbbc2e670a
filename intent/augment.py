"""Data augmentation: the labelled sentences' skeletons refilled with other entity values.

A file written from a few templates shows each entity value in few contexts ("YouTube" always after
"block", "students" always after "for"). :func:`augment` makes ``copies`` new intents per labelled
intent, each the same sentence with some of its entity spans replaced, keeping the labelling
conventions of the span it replaces (a ``target`` keeps its "for"/"to" because only words inside
the span change):

- **swap**: the whole span text by the text of another span of the same type from the training
  intents (another sentence's value in this sentence's skeleton);
- **lexicon**: each word of the span that belongs to one of the :data:`intent.lexicon.SUBSTITUTES`
  classes (services, protocols, group nouns, places, days) by another word of that class, so values
  from outside the training file ("visitors", "library", "hulu") appear in labelled contexts;
- **terms**: a span that is exactly a name of :data:`intent.lexicon.TERMS` of its type ("firewall"
  as a middlebox, "bandwidth" as a QoS metric) by another name of that type ("load balancer",
  "download rate"), so multi-word names of network things appear in labelled contexts;
- **numbers**: a ``qos_value`` by another number, an hour of ``start``/``end`` by another hour.

An intent with a span of a rare type (fewer than ``rare_below`` labelled spans in training:
``group``, ``protocol`` in the alpha file) gets ``rare_copies`` variants instead of ``copies``, so a
type seen in three sentences is not outweighed by the L2 prior and the hundred ``target`` spans.

The unlabelled words between spans are left alone: the structure is the training file's, the
values are not. Deterministic for a given ``seed``. Every method but ``llm`` trains on augmented
intents (:func:`intent.methods.factory`; the defaults were chosen on the grouped split, fold seed 1,
bench/RESULTS.md "Intent extraction") and on synthetic policy prose (:mod:`intent.prose`: the
refilled sentences keep the file's short imperative style; the prose brings the style operators'
policies are written in, bench/RESULTS.md "Intent extraction on policy prose").
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from intent.data import LabelledIntent, Span
from intent.lexicon import SUBSTITUTES, TERMS, WORD_CLASSES
from intent.prose import ProseConfig, policy_prose

_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)?")
_HOUR = re.compile(r"\b(\d{1,2})(:\d{2})?(\s*(?:am|pm))?\b", re.IGNORECASE)
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
# the substitutable words, by class, as sorted lists (a stable order makes the choices reproducible)
_POOLS: dict[str, list[str]] = {name: sorted(w for w in WORD_CLASSES[name] if " " not in w) for name in SUBSTITUTES}
_TERM_POOLS: dict[str, list[str]] = {kind: sorted(terms) for kind, terms in TERMS.items()}


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 4  # new intents per labelled intent
    p_swap: float = 0.5  # per span: replaced by another training span of its type
    p_word: float = 0.5  # per substitutable word of a span not swapped: replaced within its class
    seed: int = 0
    rare_below: int = 10  # a type with fewer labelled spans than this in training is rare...
    rare_copies: int = 12  # ...and each intent with a span of it gets this many variants instead


def _match_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _class_of(word: str) -> str | None:
    lowered = word.lower()
    return next((name for name in SUBSTITUTES if lowered in WORD_CLASSES[name]), None)


def _respell_words(text: str, rng: random.Random, p: float) -> str:
    def replace(m: re.Match[str]) -> str:
        kind = _class_of(m.group())
        if kind is None or rng.random() >= p:
            return m.group()
        return _match_case(rng.choice(_POOLS[kind]), m.group())

    return _WORD.sub(replace, text)


def _new_value(span: Span, rng: random.Random, by_type: dict[str, list[str]], config: AugmentConfig) -> str:
    if span.type == "qos_value" and _NUMBER.match(span.text):
        return str(rng.choice([1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000]))
    if span.type in ("start", "end"):
        def hour(m: re.Match[str]) -> str:
            if m.group(3):
                return f"{rng.randint(1, 12)}{m.group(3)}"
            return f"{rng.randint(0, 23):02d}{m.group(2) or ''}"

        return _HOUR.sub(hour, span.text)
    others = by_type.get(span.type, [])
    if others and rng.random() < config.p_swap:
        return rng.choice(others)
    if span.text.lower() in TERMS.get(span.type, ()) and rng.random() < config.p_word:
        return _match_case(rng.choice(_TERM_POOLS[span.type]), span.text)
    return _respell_words(span.text, rng, config.p_word)


def augment(intents: Sequence[LabelledIntent], config: AugmentConfig = AugmentConfig()) -> list[LabelledIntent]:
    """``intents`` followed by ``config.copies`` refilled variants of each (duplicates dropped)."""
    rng = random.Random(config.seed)
    by_type: dict[str, list[str]] = {}
    for item in intents:
        for span in item.spans:
            by_type.setdefault(span.type, [])
            if span.text not in by_type[span.type]:
                by_type[span.type].append(span.text)
    counts = Counter(span.type for item in intents for span in item.spans)
    seen = {item.text for item in intents}
    out = list(intents)
    for item in intents:
        spans = sorted(item.spans, key=lambda s: s.start)
        rare = any(counts[span.type] < config.rare_below for span in spans)
        for _ in range(config.rare_copies if rare else config.copies):
            text, new_spans, pos = "", [], 0
            for span in spans:
                if span.start < pos:  # overlapping labels: keep the sentence as it is
                    break
                text += item.text[pos : span.start]
                value = _new_value(span, rng, by_type, config)
                new_spans.append(Span(span.type, len(text), len(text) + len(value), value))
                text += value
                pos = span.end
            else:
                text += item.text[pos:]
                if text not in seen:
                    seen.add(text)
                    out.append(LabelledIntent(text, tuple(new_spans)))
    return out


class AugmentedExtractor:
    """Any extractor, fitted on the augmented intents followed by synthetic policy prose
    (:func:`intent.prose.policy_prose`, ``prose.sentences`` of them; 0 for none). ``fit`` returns
    the fitted inner extractor, so what is used, saved and loaded afterwards is that extractor itself."""

    def __init__(self, inner: object, config: AugmentConfig = AugmentConfig(), prose: ProseConfig | None = None) -> None:
        self.inner, self.config, self.prose = inner, config, prose

    def fit(self, intents: Sequence[LabelledIntent]) -> object:
        settings = self.prose or ProseConfig()
        prose = policy_prose(settings) if settings.sentences else []
        return self.inner.fit([*augment(intents, self.config), *prose])  # type: ignore[attr-defined,no-any-return]

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        return self.inner.predict_spans(texts)  # type: ignore[attr-defined,no-any-return]

    def save_pretrained(self, directory: object) -> object:
        return self.inner.save_pretrained(directory)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # predict_with_doubts, known_words, vocabulary_, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
