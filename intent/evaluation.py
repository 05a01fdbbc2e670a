"""Entity-level scores of an extractor: an entity counts when its type AND span text match.

Per type, micro-averaged (pooled counts) and macro-averaged (mean over types, so rare types weigh
as much as common ones) precision/recall/F1, plus whole-intent exact match (the predicted
multiset of (type, text) equals the gold one), in k-fold cross-validation or train/test mode, with
the seconds spent fitting (summed over folds) and predicting, since the two paths differ in cost by
orders of magnitude.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sklearn.model_selection import KFold

from intent.data import LabelledIntent, Span
from nm_toolkit.errors import UserError


class SpanExtractor(Protocol):
    """What both inference paths offer: learn from labelled intents, then label new texts."""

    def fit(self, intents: Sequence[LabelledIntent]) -> SpanExtractor: ...

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]: ...


@dataclass
class EntityScores:
    """Counts behind precision/recall/F1; ``add`` accumulates one intent at a time."""

    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    intents: int = 0
    exact: int = 0
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0

    def add(self, gold: Sequence[Span], predicted: Sequence[Span]) -> None:
        g = Counter((s.type, s.text) for s in gold)
        p = Counter((s.type, s.text) for s in predicted)
        hit = g & p
        for (kind, _), n in hit.items():
            self.tp[kind] += n
        for (kind, _), n in (p - hit).items():
            self.fp[kind] += n
        for (kind, _), n in (g - hit).items():
            self.fn[kind] += n
        self.intents += 1
        self.exact += g == p

    def report(self) -> dict[str, object]:
        kinds = sorted(set(self.tp) | set(self.fp) | set(self.fn))
        per_type = {k: _prf(self.tp[k], self.fp[k], self.fn[k]) for k in kinds}
        micro = _prf(sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values()))
        macro = {m: sum(float(s[m]) for s in per_type.values()) / len(per_type) if per_type else 0.0 for m in ("precision", "recall", "f1")}
        return {
            "micro": micro,
            "macro": macro | {"support": micro["support"]},
            "per_type": per_type,
            "exact_match": self.exact / self.intents if self.intents else 0.0,
            "intents": self.intents,
            "fit_seconds": self.fit_seconds,
            "predict_ms_per_intent": 1000 * self.predict_seconds / self.intents if self.intents else 0.0,
        }


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def score(extractor: SpanExtractor, test: Sequence[LabelledIntent], scores: EntityScores | None = None) -> EntityScores:
    scores = scores or EntityScores()
    started = time.perf_counter()
    for item, predicted in zip(test, extractor.predict_spans([t.text for t in test]), strict=True):
        scores.add(item.spans, predicted)
    scores.predict_seconds += time.perf_counter() - started
    return scores


def _fit(make: Callable[[], SpanExtractor], train: Sequence[LabelledIntent]) -> tuple[SpanExtractor, float]:
    started = time.perf_counter()
    extractor = make().fit(train)
    return extractor, time.perf_counter() - started


def train_test(make: Callable[[], SpanExtractor], train: Sequence[LabelledIntent], test: Sequence[LabelledIntent]) -> dict[str, object]:
    """Fit a fresh extractor on ``train`` and score it on ``test``."""
    extractor, fit_seconds = _fit(make, train)
    scores = score(extractor, test)
    scores.fit_seconds = fit_seconds
    return scores.report() | {"mode": "train_test", "train": len(train)}


def cross_validate(
    make: Callable[[], SpanExtractor],
    intents: Sequence[LabelledIntent],
    folds: int = 5,
    seed: int = 0,
    on_fold: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Pooled scores over ``folds`` shuffled folds (every intent is scored once, by a model that
    never saw it), plus the micro-F1 of each fold to show the spread."""
    if not 2 <= folds <= len(intents):
        raise UserError(f"--folds must be between 2 and the number of intents ({len(intents)}), got {folds}")
    pooled, fold_f1 = EntityScores(), []
    for k, (train_idx, test_idx) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(intents)):
        extractor, fit_seconds = _fit(make, [intents[i] for i in train_idx])
        fold = score(extractor, [intents[i] for i in test_idx])
        fold.fit_seconds = fit_seconds
        fold_f1.append(fold.report()["micro"]["f1"])  # type: ignore[index]
        _merge(pooled, fold)
        if on_fold:
            on_fold(k)
    return pooled.report() | {"mode": "cross_validation", "folds": folds, "seed": seed, "fold_micro_f1": fold_f1}


def _merge(into: EntityScores, other: EntityScores) -> None:
    into.tp.update(other.tp)
    into.fp.update(other.fp)
    into.fn.update(other.fn)
    into.intents += other.intents
    into.exact += other.exact
    into.fit_seconds += other.fit_seconds
    into.predict_seconds += other.predict_seconds
