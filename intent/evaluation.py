"""Entity-level scores of an extractor: an entity counts when its type AND span text match.

Per type, micro-averaged (pooled counts) and macro-averaged (mean over types, so rare types weigh
as much as common ones) precision/recall/F1, plus whole-intent exact match (the predicted
multiset of (type, text) equals the gold one), in k-fold cross-validation or train/test mode, with
the seconds spent fitting (summed over folds) and predicting, since the two paths differ in cost by
orders of magnitude.

An extractor that can say how sure it is (``predict_abstaining``) abstains on some spans: they are
asked about, not acted on. An abstained span scores as a miss of the gold entity it would have
matched and as a false positive when it matches none, so abstaining never raises a score; the
report adds the abstain rate and the precision of the spans not abstained on. What the spans are
for is an intent: the report also says how many sentences with an entity yield one from the spans
answered (``compiled_rate``, :func:`intent.structure.structure`) and how many with nothing to
extract yield one all the same (``false_intent_rate``).

Three ways to make the folds. ``random``: shuffled k-fold, as before. ``grouped``: the intents are
clustered by the words they use (TF-IDF of word unigrams and bigrams, average-linkage agglomerative
clustering on cosine distance, ``CLUSTERS_PER_FOLD`` clusters per fold) and each cluster stays on
one side of every split, so a fold is scored on sentences whose phrasing and entity values its
model mostly never saw. ``skeleton``: intents that share a skeleton (their entity types in text
order, entity texts and filler words dropped) stay on one side. On a file written from a few
templates the random folds share phrasings and overstate how well an extractor does on operators'
own text; ``grouped`` is the proxy for that (bench/RESULTS.md, "Intent extraction": the skeleton
split moves the scores by 0.01-0.03 only), and a second figure since issue 25: methods are chosen
on the policy-prose development set (``tests/data/intent_policy_prose_dev.json``, train/test mode).

Every missed gold entity is also sorted into an *error anatomy* against the training intents of
its fold: ``unseen_words`` (a word of the span occurs in no training sentence), ``label_convention``
(its text occurs in training, but labelled with another type, or unlabelled, or inside a span with
other boundaries), ``unseen_structure`` (words and label seen as in gold: the model missed it in
this context).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sklearn.model_selection import GroupKFold, KFold

from intent.data import LabelledIntent, Span, tokenize
from intent.structure import structure
from nm_toolkit.errors import UserError


class SpanExtractor(Protocol):
    """What both inference paths offer: learn from labelled intents, then label new texts."""

    def fit(self, intents: Sequence[LabelledIntent]) -> SpanExtractor: ...

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]: ...


@dataclass(frozen=True)
class Abstention:
    """A span the extractor read but is not sure of, and why: it is asked about, not acted on."""

    span: Span
    reason: str


def predict_abstaining(extractor: SpanExtractor, texts: Sequence[str]) -> list[tuple[list[Span], list[Abstention]]]:
    """The spans of each text the extractor stands by, and those it abstains on (none for an
    extractor that cannot say how sure it is)."""
    if hasattr(extractor, "predict_abstaining"):
        return extractor.predict_abstaining(texts)  # type: ignore[no-any-return]
    return [(spans, []) for spans in extractor.predict_spans(texts)]


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
    errors: Counter[str] = field(default_factory=Counter)
    answered_fp: int = 0  # wrong spans the extractor stood by
    abstained: int = 0
    abstained_right: int = 0  # abstentions on a span that was right after all
    with_entities: int = 0  # intents with a labelled entity...
    compiled: int = 0  # ...whose answered spans make an operator intent (intent.structure)
    without_entities: int = 0  # intents with nothing to extract...
    false_intents: int = 0  # ...whose answered spans make one all the same

    def add(self, gold: Sequence[Span], predicted: Sequence[Span], abstained: Sequence[Span] = ()) -> None:
        """Count one intent. An abstained span scores as a miss of the gold entity it would have
        matched, and as a false positive when it matches none, so abstaining never raises a score."""
        g = Counter((s.type, s.text) for s in gold)
        p = Counter((s.type, s.text) for s in predicted)
        hit = g & p
        a = Counter((s.type, s.text) for s in abstained)
        a_right = a & (g - hit)
        for (kind, _), n in hit.items():
            self.tp[kind] += n
        for (kind, _), n in ((p - hit) + (a - a_right)).items():
            self.fp[kind] += n
        for (kind, _), n in (g - hit).items():
            self.fn[kind] += n
        self.answered_fp += sum((p - hit).values())
        self.abstained += sum(a.values())
        self.abstained_right += sum(a_right.values())
        self.intents += 1
        self.exact += g == p and not a

    def report(self) -> dict[str, object]:
        kinds = sorted(set(self.tp) | set(self.fp) | set(self.fn))
        per_type = {k: _prf(self.tp[k], self.fp[k], self.fn[k]) for k in kinds}
        micro = _prf(sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values()))
        tp = sum(self.tp.values())
        answered = tp + self.answered_fp
        macro = {m: sum(float(s[m]) for s in per_type.values()) / len(per_type) if per_type else 0.0 for m in ("precision", "recall", "f1")}
        return {
            "micro": micro,
            "macro": macro | {"support": micro["support"]},
            "per_type": per_type,
            "exact_match": self.exact / self.intents if self.intents else 0.0,
            "abstain_rate": self.abstained / (answered + self.abstained) if answered + self.abstained else 0.0,
            "answered_precision": tp / answered if answered else 0.0,
            "abstained_right": self.abstained_right,
            "compiled_rate": self.compiled / self.with_entities if self.with_entities else 0.0,
            "false_intent_rate": self.false_intents / self.without_entities if self.without_entities else 0.0,
            "intents": self.intents,
            "fit_seconds": self.fit_seconds,
            "predict_ms_per_intent": 1000 * self.predict_seconds / self.intents if self.intents else 0.0,
        } | ({"missed_by_cause": dict(sorted(self.errors.items()))} if self.errors else {})


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


Split = Literal["random", "grouped", "skeleton"]
SPLITS: tuple[str, ...] = ("random", "grouped", "skeleton")
CLUSTERS_PER_FOLD = 4
ERROR_CAUSES: tuple[str, ...] = ("unseen_words", "label_convention", "unseen_structure")


def skeleton(intent: LabelledIntent) -> str:
    """The sentence's structure: its entity types in text order ("operation traffic target"),
    entity texts and the words between them dropped; "(none)" for an intent without entities."""
    return " ".join(s.type for s in sorted(intent.spans, key=lambda s: (s.start, s.end))) or "(none)"


def word_clusters(texts: Sequence[str], n_clusters: int) -> list[int]:
    """A cluster number per text: agglomerative (average linkage, cosine) over TF-IDF word 1-2-grams.

    Deterministic: the same texts always give the same clusters."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    n_clusters = min(n_clusters, len(texts))
    matrix = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"[^\W_]+", lowercase=True).fit_transform(texts).toarray()
    if n_clusters < 2:
        return [0] * len(texts)
    return [int(c) for c in AgglomerativeClustering(n_clusters=n_clusters, metric="cosine", linkage="average").fit_predict(matrix + 1e-12)]


def split_groups(intents: Sequence[LabelledIntent], folds: int, split: str) -> list[object]:
    """The group of each intent under ``split`` ("grouped" or "skeleton")."""
    if split == "skeleton":
        return [skeleton(item) for item in intents]
    if split == "grouped":
        return list(word_clusters([item.text for item in intents], CLUSTERS_PER_FOLD * folds))
    raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def split_folds(intents: Sequence[LabelledIntent], folds: int, seed: int, split: str = "random") -> list[tuple[list[int], list[int]]]:
    """``(train, test)`` index lists of each fold; ``grouped`` and ``skeleton`` keep each group on one side."""
    if split == "random":
        return [([int(i) for i in a], [int(i) for i in b]) for a, b in KFold(folds, shuffle=True, random_state=seed).split(intents)]
    groups = split_groups(intents, folds, split)
    if len({str(g) for g in groups}) < folds:
        raise UserError(f"--split {split} needs at least {folds} groups of intents, the file gives {len({str(g) for g in groups})}: pass fewer --folds")
    splitter = GroupKFold(folds, shuffle=True, random_state=seed)
    return [([int(i) for i in a], [int(i) for i in b]) for a, b in splitter.split(intents, groups=[str(g) for g in groups])]


class TrainingKnowledge:
    """What the training intents of a fold say about a span text, to sort each miss by its cause."""

    def __init__(self, train: Sequence[LabelledIntent]) -> None:
        self.words = {t.text.lower() for item in train for t in tokenize(item.text)}
        self.labels: dict[str, set[str]] = {}
        for item in train:
            for span in item.spans:
                self.labels.setdefault(span.text.lower(), set()).add(span.type)
        self.texts = [f" {' '.join(t.text.lower() for t in tokenize(item.text))} " for item in train]
        self.labelled = [{s.text.lower() for s in item.spans} for item in train]

    def cause(self, span: Span) -> str:
        words = [t.text.lower() for t in tokenize(span.text)]
        if any(w not in self.words for w in words):
            return "unseen_words"
        text = span.text.lower()
        if self.labels.get(text, set()) - {span.type}:
            return "label_convention"
        needle = f" {' '.join(words)} "
        if any(needle in sentence and text not in labelled for sentence, labelled in zip(self.texts, self.labelled, strict=True)):
            return "label_convention"  # the same words unlabelled or inside a longer span
        return "unseen_structure"


def score(
    extractor: SpanExtractor,
    test: Sequence[LabelledIntent],
    scores: EntityScores | None = None,
    knowledge: TrainingKnowledge | None = None,
) -> EntityScores:
    scores = scores or EntityScores()
    started = time.perf_counter()
    predictions = predict_abstaining(extractor, [t.text for t in test])
    scores.predict_seconds += time.perf_counter() - started
    for item, (predicted, abstentions) in zip(test, predictions, strict=True):
        scores.add(item.spans, predicted, [a.span for a in abstentions])
        makes_intent = structure(item.text, predicted).kind == "operator"
        if item.spans:
            scores.with_entities += 1
            scores.compiled += makes_intent
        else:
            scores.without_entities += 1
            scores.false_intents += makes_intent
        if knowledge is not None:
            found = {(s.type, s.text) for s in predicted}
            scores.errors.update(knowledge.cause(s) for s in item.spans if (s.type, s.text) not in found)
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
    split: str = "random",
) -> dict[str, object]:
    """Pooled scores over ``folds`` folds (every intent is scored once, by a model that never saw
    it; ``split`` says how the folds are made, see the module's doc), plus the micro-F1 of each
    fold to show the spread and the causes of the missed entities."""
    if not 2 <= folds <= len(intents):
        raise UserError(f"--folds must be between 2 and the number of intents ({len(intents)}), got {folds}")
    pooled, fold_f1 = EntityScores(), []
    for k, (train_idx, test_idx) in enumerate(split_folds(intents, folds, seed, split)):
        train = [intents[i] for i in train_idx]
        extractor, fit_seconds = _fit(make, train)
        fold = score(extractor, [intents[i] for i in test_idx], knowledge=TrainingKnowledge(train))
        fold.fit_seconds = fit_seconds
        fold_f1.append(fold.report()["micro"]["f1"])  # type: ignore[index]
        _merge(pooled, fold)
        if on_fold:
            on_fold(k)
    return pooled.report() | {"mode": "cross_validation", "split": split, "folds": folds, "seed": seed, "fold_micro_f1": fold_f1}


def _merge(into: EntityScores, other: EntityScores) -> None:
    into.tp.update(other.tp)
    into.fp.update(other.fp)
    into.fn.update(other.fn)
    into.intents += other.intents
    into.exact += other.exact
    into.fit_seconds += other.fit_seconds
    into.predict_seconds += other.predict_seconds
    into.errors.update(other.errors)
    into.answered_fp += other.answered_fp
    into.abstained += other.abstained
    into.abstained_right += other.abstained_right
    into.with_entities += other.with_entities
    into.compiled += other.compiled
    into.without_entities += other.without_entities
    into.false_intents += other.false_intents
