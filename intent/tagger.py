"""A scikit-learn-style entity tagger that needs no LLM: a linear-chain CRF over BIO tags.

Each token is described by its word, stem, shape, affixes, its neighbours within a window, the
general networking word classes of :mod:`intent.lexicon`, its place in a name of a network thing
(:data:`intent.lexicon.TERMS`), the pretrained-embedding clusters of
:mod:`intent.embed` (the word and its neighbours), and the last preposition before it
("from"/"to"/"for"/"between"...): in the Nile data that preposition is what separates an origin from
a destination or a target, and a start from an end. The CRF (CRFsuite, L-BFGS with elastic-net
regularisation) scores whole tag sequences, so span boundaries are decided jointly rather than
token by token; only BIO-consistent paths survive :func:`intent.data.decode_spans`.

No gazetteer of training spans: a feature "this n-gram was labelled X in training" is perfectly
predictive on the training sentences themselves, so the CRF leans on it and then misses every span
it has not seen verbatim (measured in bench/RESULTS.md, "Intent extraction"). The names of
:data:`intent.lexicon.TERMS` are another matter: a generic list written apart from the labelled
file, most of whose names no training sentence holds until augmentation puts them into spans.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import sklearn_crfsuite

from intent.data import LabelledIntent, Span, Token, bio_tags, decode_spans, tokenize
from intent.embed import word_cluster
from intent.evaluation import Abstention
from intent.lexicon import term_matches, word_classes
from intent.saved import read_config, write_config
from nm_toolkit.errors import UserError

MODEL_FILE = "tagger.crfsuite"
PREPOSITIONS = frozenset("from to for in on at between and through into of during until till by with".split())
CLAUSE_PUNCTUATION = frozenset(",;:")

Features = dict[str, float]


@dataclass(frozen=True)
class TaggerConfig:
    """Feature window and CRF regularisation of :class:`SklearnIntentTagger`.

    ``c1``/``c2`` are fixed a priori at the values of sklearn-crfsuite's tutorial, not tuned on
    the evaluation folds.
    """

    window: int = 2
    affix: int = 3
    c1: float = 0.1  # L1: drops features that never help
    c2: float = 0.1  # L2: shrinks the rest
    max_iterations: int = 200


_DIGITS, _LOWER, _UPPER = re.compile(r"\d+"), re.compile(r"[a-z]+"), re.compile(r"[A-Z]+")


@lru_cache(maxsize=8192)
def token_shape(word: str) -> str:
    """"16:00" -> "d:d", "Netflix" -> "Xx", "DPI" -> "X", "5" -> "d". Cached: the span taggers ask
    for the same words' shapes for every candidate that starts or ends at them."""
    return _UPPER.sub("X", _LOWER.sub("x", _DIGITS.sub("d", word)))


@lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """A crude suffix stripper ("blocked" -> "block") so inflections share evidence (cached, as
    :func:`token_shape`)."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def last_prepositions(words: Sequence[str]) -> list[str]:
    """For each (lower-case) word, the last preposition before it in its clause, or "<none>".

    A clause ends at ",", ";", ":" or a word that opens a new one ("ensure", "that", "when"): in
    "add a DPI to ensure students from the labs ..." the "to" of the infinitive is not what
    "students" follows (that made it a "to students" target, bench/RESULTS.md issue 14)."""
    out, last = [], "<none>"
    for word in words:
        out.append(last)
        if word in PREPOSITIONS:
            last = word
        elif word in CLAUSE_PUNCTUATION or "clause_open" in word_classes(word):
            last = "<none>"
    return out


def token_features(tokens: Sequence[Token], config: TaggerConfig = TaggerConfig()) -> list[Features]:
    """One sparse feature dict per token (a pure function of the sentence)."""
    words = [t.text.lower() for t in tokens]
    shapes = [token_shape(t.text) for t in tokens]
    classes = [word_classes(word) for word in words]
    clusters = [word_cluster(word) for word in words]
    n = len(words)
    in_term: dict[int, str] = {}  # token -> "middlebox|B": its place in a name of intent.lexicon.TERMS
    for a, b, kind in term_matches(words):
        in_term.update({k: f"{kind}|{'B' if k == a else 'I'}" for k in range(a, b)})
    out: list[Features] = []
    for i, (word, last_prep) in enumerate(zip(words, last_prepositions(words), strict=True)):
        text = tokens[i].text
        f: Features = {"bias": 1.0, f"w={word}": 1.0, f"stem={stem(word)}": 1.0, f"shape={shapes[i]}": 1.0}
        if text[:1].isupper():
            f["title"] = 1.0
        if i == 0:
            f["first"] = 1.0
        if i == n - 1:
            f["last"] = 1.0
        # "5gbps", "F2movies", "4pm": the tokenizer splits letters from digits; whether a token is
        # glued to its neighbour tells a unit after a value from one word cut in pieces
        if i > 0 and tokens[i - 1].end == tokens[i].start:
            f["glued_prev"] = 1.0
        if i + 1 < n and tokens[i].end == tokens[i + 1].start:
            f["glued_next"] = 1.0
        for k in range(1, config.affix + 1):
            f[f"pre{k}={word[:k]}"] = 1.0
            f[f"suf{k}={word[-k:]}"] = 1.0
        for d in range(-config.window, config.window + 1):
            if 0 <= i + d < n:
                f.update({f"class{d:+d}={c}": 1.0 for c in classes[i + d]})
                if d:
                    f[f"w{d:+d}={words[i + d]}"] = 1.0
                    f[f"shape{d:+d}={shapes[i + d]}"] = 1.0
            elif d:
                f[f"w{d:+d}=<pad>"] = 1.0
        f[f"bigram-={words[i - 1] if i else '<s>'}|{word}"] = 1.0
        f[f"bigram+={word}|{words[i + 1] if i + 1 < n else '</s>'}"] = 1.0
        f[f"last_prep={last_prep}"] = 1.0
        f.update({f"cluster{d:+d}={clusters[i + d]}": 1.0 for d in (-1, 0, 1) if 0 <= i + d < n})
        if i in in_term:
            f[f"term={in_term[i]}"] = 1.0
        f[f"w={word}|last_prep={last_prep}"] = 1.0
        f.update({f"class={c}|last_prep={last_prep}": 1.0 for c in classes[i]})
        out.append(f)
    return out


class SklearnIntentTagger:
    """BIO entity tagger: ``fit(intents)`` then ``predict_spans(texts)``."""

    def __init__(self, config: TaggerConfig = TaggerConfig()) -> None:
        self.config = config

    def fit(self, intents: Sequence[LabelledIntent]) -> SklearnIntentTagger:
        if not intents:
            raise UserError("no training intents: pass a Nile-format file with at least one labelled intent")
        X, y = [], []
        for item in intents:
            tokens = tokenize(item.text)
            X.append(token_features(tokens, self.config))
            y.append(bio_tags(tokens, item.spans))
        cfg = self.config
        self.crf_ = sklearn_crfsuite.CRF(
            algorithm="lbfgs", c1=cfg.c1, c2=cfg.c2, max_iterations=cfg.max_iterations, all_possible_transitions=True
        )
        self.crf_.fit(X, y)
        return self

    def predict_tags(self, tokens: Sequence[Token]) -> list[str]:
        return list(self.crf_.predict_single(token_features(tokens, self.config))) if tokens else []

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """Labelled spans of each text (character offsets into that text)."""
        result = []
        for text in texts:
            tokens = tokenize(text)
            result.append(decode_spans(text, tokens, self.predict_tags(tokens)))
        return result

    def predict_abstaining(self, texts: Sequence[str]) -> list[tuple[list[Span], list[Abstention]]]:
        """The spans of each text, less those the model rates below even odds: a span's probability
        is the least marginal probability of its tokens' tags (an upper bound of the exact one)."""
        from intent.span import split_by_confidence

        result = []
        for text in texts:
            tokens = tokenize(text)
            if not tokens:
                result.append(([], []))
                continue
            features = token_features(tokens, self.config)
            tags = self.crf_.predict_single(features)
            marginals = self.crf_.predict_marginals_single(features)
            scored = []
            for span in decode_spans(text, tokens, tags):
                covered = [k for k, t in enumerate(tokens) if span.start <= t.start < span.end]
                scored.append((span, min(marginals[k][tags[k]] for k in covered)))
            result.append(split_by_confidence(scored))
        return result

    # -- persistence: CRFsuite's own model file, no pickle ----------------------------------------
    def save_pretrained(self, directory: Path) -> Path:
        write_config(directory, "sklearn", asdict(self.config))
        (directory / MODEL_FILE).write_bytes(Path(self.crf_.modelfile.name).read_bytes())
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path) -> SklearnIntentTagger:
        tagger = cls(TaggerConfig(**read_config(directory, "sklearn", MODEL_FILE)))  # type: ignore[arg-type]
        tagger.crf_ = sklearn_crfsuite.CRF(model_filename=str(directory / MODEL_FILE))
        tagger.crf_.tagger_  # noqa: B018 - open (read) the model now, not at the first prediction
        return tagger
