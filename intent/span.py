"""Entity taggers that score whole candidate spans, not BIO tags per token.

The Nile labels follow span conventions that a token tagger gets wrong at the edges: "to labs" is a
destination with its preposition, "for faculty" a target without the noun after it, "must not be
blocked" one operation. A BIO tagger decides each edge from the tokens around it; here every run
of up to ``max_span_tokens_`` tokens (the longest labelled span seen in training) is one candidate,
described as a whole: its text, first and last word, length, the words just outside it, the last
preposition before it in its clause, whether it opens a clause and comes before an auxiliary (a
subject: "students shall ..."), the :mod:`intent.lexicon` classes of its words, whether it is, holds,
is part of or cuts a name of a network thing (:data:`intent.lexicon.TERMS`: "traffic shaper",
"download rate") and the :mod:`intent.embed` clusters of its words and neighbours. Each entity type has one
weight per feature; a candidate's score for a type says how much better it is as that entity than
as unlabelled tokens (which score 0), and decoding is the best non-overlapping set of spans
(:func:`best_segmentation`). Two objectives learn the weights:

- ``segmentation`` (method ``semicrf``, a semi-Markov CRF): the log-likelihood of the labelled
  segmentation of each sentence against all its segmentations into entity spans and single
  unlabelled tokens (the forward algorithm over span ends), by L-BFGS. Boundaries are chosen
  jointly and there is no threshold.
- ``per_span`` (method ``spanlr``): multinomial logistic regression of every candidate on its type
  or "none"; the score is the log-odds of the type against "none" plus ``margin``, which offsets the
  many "none" candidates (about 60 per sentence against 4 entities).

Both penalise ``l2`` * |W|^2 against the summed negative log-likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from intent.data import LabelledIntent, Span, Token, token_range, tokenize
from intent.embed import word_cluster
from intent.evaluation import Abstention
from intent.lexicon import term_matches, word_classes
from intent.saved import read_config, write_config
from intent.tagger import (
    CLAUSE_PUNCTUATION,
    PREPOSITIONS,
    Features,
    last_prepositions,
    stem,
    token_shape,
)
from nm_toolkit.errors import UserError

WEIGHTS_FILE = "span_weights.safetensors"
METHOD_OF = {"segmentation": "semicrf", "per_span": "spanlr"}
BOUNDARY_PUNCTUATION = frozenset(",.;!?")


Objective = Literal["segmentation", "per_span"]


@dataclass(frozen=True)
class SpanTaggerConfig:
    """Training of :class:`SpanIntentTagger`.

    ``l2`` and ``margin`` were chosen on fold seeds 1-4 only (bench/RESULTS.md, "Intent
    extraction"), never on the reported seed 0.
    """

    objective: Objective = "segmentation"
    l2: float = 0.5
    margin: float = 2.0  # per_span only: added to each type's log-odds against "none"
    max_iterations: int = 200


def candidate_spans(n_tokens: int, max_len: int) -> list[tuple[int, int]]:
    """Every ``(start, end)`` token range (end exclusive) of 1..``max_len`` tokens, by start then end."""
    return [(i, j) for i in range(n_tokens) for j in range(i + 1, min(n_tokens, i + max_len) + 1)]


@dataclass(frozen=True)
class SentenceView:
    """What every candidate span of a sentence reads about its tokens, computed once per sentence
    rather than once per candidate (about 40 candidates share each token)."""

    words: tuple[str, ...]  # lower-case
    stems: tuple[str, ...]
    shapes: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]
    clusters: tuple[str, ...]  # intent.embed.word_cluster of each word
    last_prep: tuple[str, ...]  # the last preposition before each token
    glued: tuple[bool, ...]  # glued[k]: token k ends where token k + 1 starts ("5gbps")
    title: tuple[bool, ...]
    terms: tuple[tuple[int, int, str], ...]  # intent.lexicon.term_matches: names of network things

    @classmethod
    def of(cls, tokens: Sequence[Token]) -> SentenceView:
        words = tuple(t.text.lower() for t in tokens)
        return cls(
            words=words,
            stems=tuple(stem(w) for w in words),
            shapes=tuple(token_shape(t.text) for t in tokens),
            classes=tuple(word_classes(w) for w in words),
            clusters=tuple(word_cluster(w) for w in words),
            last_prep=tuple(last_prepositions(words)),
            glued=tuple(a.end == b.start for a, b in zip(tokens, tokens[1:], strict=False)),
            title=tuple(t.text[:1].isupper() for t in tokens),
            terms=tuple(term_matches(words)),
        )


def span_features(view: SentenceView, i: int, j: int) -> Features:
    """Sparse features of tokens ``i..j-1`` of the sentence ``view`` as one candidate entity (a pure function)."""
    words, n, prep = view.words, len(view.words), view.last_prep[i]
    first, last = words[i], words[j - 1]
    f: Features = {
        "bias": 1.0,
        f"len={j - i}": 1.0,
        f"text={' '.join(words[i:j])}": 1.0,
        f"first={first}": 1.0,
        f"last={last}": 1.0,
        f"first_stem={view.stems[i]}": 1.0,
        f"last_stem={view.stems[j - 1]}": 1.0,
        f"first_shape={view.shapes[i]}": 1.0,
        f"last_shape={view.shapes[j - 1]}": 1.0,
        f"before={words[i - 1] if i else '<s>'}": 1.0,
        f"after={words[j] if j < n else '</s>'}": 1.0,
        f"before2={words[i - 2] if i > 1 else '<s>'}": 1.0,
        f"after2={words[j + 1] if j + 1 < n else '</s>'}": 1.0,
        f"last_prep={prep}": 1.0,
        f"first={first}|last_prep={prep}": 1.0,
        f"last={last}|last_prep={prep}": 1.0,
    }
    for k in range(i, j):
        f[f"in={words[k]}"] = f.get(f"in={words[k]}", 0.0) + 1.0
        f[f"in_stem={view.stems[k]}"] = 1.0
        f.update({f"in_class={c}": 1.0 for c in view.classes[k]})
    f.update({f"first_class={c}": 1.0 for c in view.classes[i]})
    for c in view.classes[j - 1]:
        f[f"last_class={c}"] = 1.0
        f[f"last_class={c}|last_prep={prep}"] = 1.0
    if i > 0:
        f.update({f"before_class={c}": 1.0 for c in view.classes[i - 1]})
        if view.glued[i - 1]:
            f["glued_before"] = 1.0  # "5" of "5gbps" is not a span on its own edge
    if j < n:
        f.update({f"after_class={c}": 1.0 for c in view.classes[j]})
        if view.glued[j - 1]:
            f["glued_after"] = 1.0
    if any(w in BOUNDARY_PUNCTUATION for w in words[i:j]):
        f["punctuation_inside"] = 1.0
    if i == 0:
        f["at_start"] = 1.0
    if j == n:
        f["at_end"] = 1.0
    if view.title[i]:
        f["title"] = 1.0
    if first in PREPOSITIONS:
        f["starts_with_preposition"] = 1.0
    if opens_clause(view, i):
        f["opens_clause"] = 1.0
        f.update({f"opens_clause|first_class={c}": 1.0 for c in view.classes[i]})
    if j < n and "auxiliary" in view.classes[j]:
        f["then_auxiliary"] = 1.0
    for a, b, kind in view.terms:
        if (a, b) == (i, j):
            f[f"term={kind}"] = 1.0
        elif a <= i and j <= b:
            f[f"part_of_term={kind}"] = 1.0
        elif i <= a and b <= j:
            f[f"has_term={kind}"] = 1.0
        elif a < j and i < b:
            f["cuts_term"] = 1.0
    f[f"first_cluster={view.clusters[i]}"] = 1.0
    f[f"last_cluster={view.clusters[j - 1]}"] = 1.0
    f[f"before_cluster={view.clusters[i - 1] if i else '<s>'}"] = 1.0
    f[f"after_cluster={view.clusters[j] if j < n else '</s>'}"] = 1.0
    f.update({f"in_cluster={view.clusters[k]}": 1.0 for k in range(i, j)})
    return f


def opens_clause(view: SentenceView, i: int) -> bool:
    """Whether token ``i`` starts a clause, determiners aside ("all students" after "ensure"): at
    the sentence's start, after clause punctuation or after a clause-opening word. With
    ``then_auxiliary`` ("students shall ...") it marks a subject, whatever the noun."""
    k = i
    while k > 0 and "determiner" in view.classes[k - 1]:
        k -= 1
    return k == 0 or view.words[k - 1] in CLAUSE_PUNCTUATION or "clause_open" in view.classes[k - 1]


@dataclass(frozen=True)
class Candidates:
    """A sentence's candidate spans and their features, flattened: ``names[k]`` with ``values[k]``
    describes candidate ``rows[k]``. Flat arrays, so a model maps all names to its columns in one
    pass (:meth:`SpanIntentTagger._matrix`) instead of one Python loop per candidate."""

    tokens: list[Token]
    spans: list[tuple[int, int]]
    names: list[str]
    values: np.ndarray
    rows: np.ndarray


@lru_cache(maxsize=64)
def featurise(text: str, max_len: int) -> Candidates:
    """The tokens of ``text``, its candidate spans of up to ``max_len`` tokens and their features.

    Cached (the result is shared: read it, never change it) because the vote's two span members
    featurise the same text with the same ``max_len``; the vote asks its members one text at a time
    so that the second finds it here (bench/intent_predict.py)."""
    tokens = tokenize(text)
    view = SentenceView.of(tokens)
    spans = candidate_spans(len(tokens), max_len)
    features = [span_features(view, i, j) for i, j in spans]
    return Candidates(
        tokens=tokens,
        spans=spans,
        names=[name for f in features for name in f],
        values=np.fromiter((v for f in features for v in f.values()), np.float64),
        rows=np.repeat(np.arange(len(spans)), [len(f) for f in features]),
    )


def best_segmentation(scores: np.ndarray) -> list[tuple[int, int]]:
    """The highest-scoring set of non-overlapping spans, as ``(start, end)`` token ranges.

    ``scores[j - 1, l - 1]`` is the score of the span of ``l`` tokens ending before token ``j``
    (``-inf`` where there is none); a token outside every span scores 0. Viterbi over span ends.
    """
    n, max_len = scores.shape
    best = np.zeros(n + 1)
    back = [0] * (n + 1)  # 0: token j-1 is outside; l > 0: a span of l tokens ends at j
    for j in range(1, n + 1):
        best[j], back[j] = best[j - 1], 0
        for length in range(1, min(max_len, j) + 1):
            value = best[j - length] + scores[j - 1, length - 1]
            if value > best[j]:
                best[j], back[j] = value, length
    spans, j = [], n
    while j > 0:
        if back[j]:
            spans.append((j - back[j], j))
            j -= back[j]
        else:
            j -= 1
    return spans[::-1]


def span_marginals(scores: np.ndarray) -> np.ndarray:
    """``marginals[j - 1, l - 1, t]``: the probability, over all segmentations weighted by their
    exp-score, that the span of ``l`` tokens ending before token ``j`` is an entity of type ``t``.

    ``scores`` is as :func:`best_segmentation`'s with a last axis of types (``-inf`` where there
    is no span); a token outside every span scores 0. Forward-backward in log space.
    """
    n, max_len, _ = scores.shape
    span = np.logaddexp.reduce(scores, axis=2)  # each span, summed over its types
    forward, backward = np.full(n + 1, -np.inf), np.full(n + 1, -np.inf)
    forward[0], backward[n] = 0.0, 0.0
    for j in range(1, n + 1):
        ways = [forward[j - 1]] + [forward[j - length] + span[j - 1, length - 1] for length in range(1, min(max_len, j) + 1)]
        forward[j] = np.logaddexp.reduce(ways)
    for i in range(n - 1, -1, -1):
        ways = [backward[i + 1]] + [span[i + length - 1, length - 1] + backward[i + length] for length in range(1, min(max_len, n - i) + 1)]
        backward[i] = np.logaddexp.reduce(ways)
    ends = np.arange(1, n + 1)[:, None]
    lengths = np.arange(1, max_len + 1)[None, :]
    starts = np.clip(ends - lengths, 0, n)
    around = forward[starts] + backward[np.minimum(ends, n)] - forward[n]
    around = np.where(ends - lengths >= 0, around, -np.inf)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.exp(scores + around[:, :, None]), nan=0.0)


# a span the model rates below this probability is abstained on, not acted on
MIN_CONFIDENCE = 0.5


def split_by_confidence(scored: Sequence[tuple[Span, float]], threshold: float = MIN_CONFIDENCE) -> tuple[list[Span], list[Abstention]]:
    """The spans at or above ``threshold`` and abstentions on the rest, with the probability as the reason."""
    kept = [span for span, p in scored if p >= threshold]
    doubts = [Abstention(span, f"{span.text!r} read as {span.type} with probability {p:.2f} only") for span, p in scored if p < threshold]
    return kept, doubts


def log_partition(span_scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Log of the summed exp-scores of every segmentation of each sentence (the forward algorithm).

    ``span_scores[b, j - 1, l - 1]``: log-sum over entity types of the span of ``l`` tokens ending
    before token ``j`` of sentence ``b`` (a large negative number where there is none);
    ``lengths[b]``: its number of tokens. A token outside every span contributes 0.
    """
    batch, n, max_len = span_scores.shape
    alpha = [span_scores.new_zeros(batch)]
    for j in range(1, n + 1):
        ways = [alpha[j - 1]] + [alpha[j - length] + span_scores[:, j - 1, length - 1] for length in range(1, min(max_len, j) + 1)]
        alpha.append(torch.logsumexp(torch.stack(ways, 1), 1))
    return torch.stack(alpha, 1)[torch.arange(batch), lengths]


class SpanIntentTagger:
    """Linear span-scoring entity tagger: ``fit(intents)`` then ``predict_spans(texts)``."""

    def __init__(self, config: SpanTaggerConfig = SpanTaggerConfig()) -> None:
        self.config = config

    def _columns(self, candidates: Candidates) -> np.ndarray:
        """The vocabulary column of each feature name, -1 for a name not in it."""
        return np.fromiter(map(self.vocabulary_.get, candidates.names, repeat(-1)), np.int64, len(candidates.names))

    def _matrix(self, candidates: Candidates) -> sparse.csr_matrix:
        """One row per candidate over the vocabulary (names the vocabulary lacks are dropped)."""
        columns = self._columns(candidates)
        known = columns >= 0
        shape = (len(candidates.spans), len(self.vocabulary_))
        return sparse.csr_matrix((candidates.values[known], (candidates.rows[known], columns[known])), shape=shape)

    def _scores(self, candidates: Candidates) -> np.ndarray:
        """Each candidate's score per type: ``_matrix(candidates) @ weights_`` summed directly, without
        building a sparse matrix (its construction cost more than the product, bench/intent_predict.py)."""
        columns = self._columns(candidates)
        known = columns >= 0
        rows = candidates.rows[known]
        # every candidate has the "bias" feature, which every fitted vocabulary holds: no row is empty
        first_of_row = np.searchsorted(rows, np.arange(len(candidates.spans)))
        return np.add.reduceat(self.weights_[columns[known]] * candidates.values[known, None], first_of_row)

    def fit(self, intents: Sequence[LabelledIntent]) -> SpanIntentTagger:
        self.entity_types_ = sorted({s.type for item in intents for s in item.spans})
        if not self.entity_types_:
            raise UserError("no labelled spans in the training intents: pass a Nile-format file whose parts carry entity types")
        gold = [[(s.type, r) for s in item.spans if (r := token_range(tokenize(item.text), s))] for item in intents]
        self.max_span_tokens_ = max(j - i for labelled in gold for _, (i, j) in labelled)
        self.vocabulary_: dict[str, int] = {}
        type_index = {t: k for k, t in enumerate(self.entity_types_)}
        featurised = [featurise(item.text, self.max_span_tokens_) for item in intents]
        for candidates in featurised:
            for name in candidates.names:
                self.vocabulary_.setdefault(name, len(self.vocabulary_))
        sentences, gold_rows, gold_types, offset = [], [], [], 0
        for candidates, labelled in zip(featurised, gold, strict=True):
            row_of = {c: offset + k for k, c in enumerate(candidates.spans)}
            for kind, token_span in labelled:
                gold_rows.append(row_of[token_span])
                gold_types.append(type_index[kind])
            sentences.append(candidates.spans)
            offset += len(candidates.spans)
        X = sparse.vstack([self._matrix(candidates) for candidates in featurised], format="csr")
        if self.config.objective == "segmentation":
            self.weights_ = _train_segmentation(X, sentences, gold_rows, gold_types, len(self.entity_types_), self.max_span_tokens_, self.config)
        else:
            labels = np.full(X.shape[0], len(self.entity_types_))  # "none"
            labels[gold_rows] = gold_types
            self.weights_ = _train_per_span(X, labels, self.vocabulary_["bias"], self.config)
        return self

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """Labelled spans of each text (character offsets into that text)."""
        return [[span for span, _ in scored] for scored in self.predict_scored(texts)]

    def predict_abstaining(self, texts: Sequence[str]) -> list[tuple[list[Span], list[Abstention]]]:
        """The spans of each text, less those the model itself rates below even odds (:meth:`predict_scored`)."""
        return [split_by_confidence(scored) for scored in self.predict_scored(texts)]

    def predict_scored(self, texts: Sequence[str]) -> list[list[tuple[Span, float]]]:
        """The best segmentation of each text into spans, each with the model's probability that it
        is an entity of that type: under ``segmentation`` its marginal over all segmentations
        (:func:`span_marginals`), under ``per_span`` the classifier's probability of the type
        against the others and "none" (the log-odds less ``margin``)."""
        result = []
        for text in texts:
            featurised = featurise(text, self.max_span_tokens_)
            tokens, candidates = featurised.tokens, featurised.spans
            if not candidates:
                result.append([])
                continue
            by_type = self._scores(featurised)
            starts, ends = np.asarray(candidates).T
            scores = np.full((len(tokens), self.max_span_tokens_), -np.inf)
            scores[ends - 1, ends - starts - 1] = by_type.max(1)
            best_type = dict(zip(candidates, by_type.argmax(1).tolist(), strict=True))
            index = {c: k for k, c in enumerate(candidates)}
            if self.config.objective == "segmentation":
                typed = np.full((len(tokens), self.max_span_tokens_, by_type.shape[1]), -np.inf)
                typed[ends - 1, ends - starts - 1] = by_type
                marginals = span_marginals(typed)
            spans = []
            for i, j in best_segmentation(scores):
                kind = best_type[(i, j)]
                if self.config.objective == "segmentation":
                    probability = float(marginals[j - 1, j - i - 1, kind])
                else:
                    odds = by_type[index[(i, j)]] - self.config.margin
                    probability = float(np.exp(odds[kind] - np.logaddexp(0.0, np.logaddexp.reduce(odds))))
                start, end = tokens[i].start, tokens[j - 1].end
                spans.append((Span(self.entity_types_[kind], start, end, text[start:end]), probability))
            result.append(spans)
        return result

    # -- persistence: JSON + safetensors, no pickle -----------------------------------------------
    def save_pretrained(self, directory: Path) -> Path:
        names = sorted(self.vocabulary_, key=self.vocabulary_.__getitem__)
        learned = {"entity_types": self.entity_types_, "max_span_tokens": self.max_span_tokens_, "features": names}
        write_config(directory, METHOD_OF[self.config.objective], asdict(self.config) | learned)
        save_file({"weights": self.weights_}, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path, method: str = "semicrf") -> SpanIntentTagger:
        """The tagger saved in ``directory``; ``method`` only names the fix when there is none."""
        meta = read_config(directory, method, WEIGHTS_FILE)
        tagger = cls(SpanTaggerConfig(**{k: meta[k] for k in ("objective", "l2", "margin", "max_iterations")}))  # type: ignore[arg-type]
        tagger.entity_types_ = meta["entity_types"]  # type: ignore[assignment]
        tagger.max_span_tokens_ = meta["max_span_tokens"]  # type: ignore[assignment]
        tagger.vocabulary_ = {name: k for k, name in enumerate(meta["features"])}  # type: ignore[arg-type]
        tagger.weights_ = load_file(str(directory / WEIGHTS_FILE))["weights"]
        return tagger


def _train_per_span(X: sparse.csr_matrix, labels: np.ndarray, bias_column: int, config: SpanTaggerConfig) -> np.ndarray:
    """Weights (features x types) scoring the log-odds of each type against "none" (the last label), plus ``margin``.

    The softmax normaliser cancels in a log-odds, so they are differences of the regression's weights.
    """
    # sklearn minimises C * summed NLL + |w|^2 / 2, i.e. summed NLL + |w|^2 / (2C)
    model = LogisticRegression(C=1 / (2 * config.l2), max_iter=10 * config.max_iterations).fit(X, labels)
    coef = np.zeros((X.shape[1], int(labels.max()) + 1))
    if len(model.classes_) == 2:  # one row: the log-odds of the second class against the first
        coef[:, model.classes_[1]], coef[bias_column, model.classes_[1]] = model.coef_[0], model.intercept_[0]
    else:
        coef[:, model.classes_] = model.coef_.T
        coef[bias_column, model.classes_] += model.intercept_
    weights = coef[:, :-1] - coef[:, -1:]
    weights[bias_column] += config.margin
    return weights.astype(np.float32)


def _train_segmentation(
    X: sparse.csr_matrix,
    sentences: Sequence[Sequence[tuple[int, int]]],
    gold_rows: Sequence[int],
    gold_types: Sequence[int],
    n_types: int,
    max_len: int,
    config: SpanTaggerConfig,
) -> np.ndarray:
    """Weights (features x types) minimising the segmentations' negative log-likelihood + ``l2``*|W|^2."""
    coo = X.tocoo()
    features = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)), torch.from_numpy(coo.data.astype(np.float64)), X.shape, check_invariants=True).coalesce()
    n_rows, longest = X.shape[0], max(max((j for _, j in c), default=0) for c in sentences)
    # where[b, j - 1, l - 1]: the row of sentence b's span of l tokens ending before token j (n_rows: none)
    where = torch.full((len(sentences), longest, max_len), n_rows, dtype=torch.long)
    lengths, offset = torch.zeros(len(sentences), dtype=torch.long), 0
    for b, candidates in enumerate(sentences):
        for k, (i, j) in enumerate(candidates):
            where[b, j - 1, j - i - 1] = offset + k
        lengths[b] = max((j for _, j in candidates), default=0)
        offset += len(candidates)
    rows, types = torch.tensor(gold_rows, dtype=torch.long), torch.tensor(gold_types, dtype=torch.long)
    weights = torch.zeros(X.shape[1], n_types, dtype=torch.float64, requires_grad=True)
    no_span = torch.full((1, n_types), -1e4, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([weights], max_iter=config.max_iterations, history_size=10, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scores = torch.cat([torch.sparse.mm(features, weights), no_span])
        log_z = log_partition(torch.logsumexp(scores, 1)[where], lengths)
        loss = log_z.sum() - scores[rows, types].sum() + config.l2 * (weights * weights).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().numpy().astype(np.float32)
