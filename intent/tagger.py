"""A scikit-learn entity tagger that needs no LLM: token-level BIO tags from hand-crafted features.

Each token is described by its word, shape, affixes and neighbours, and by gazetteers built from
the training spans (does an n-gram starting or covering this token occur as a labelled span of a
type?). A logistic regression over ``DictVectorizer`` features gives per-token tag probabilities;
Viterbi decoding over BIO constraints (``I-x`` only after ``B-x``/``I-x``) turns them into spans.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from intent.lexicon import word_classes
from intent.data import OUTSIDE, LabelledIntent, Span, Token, bio_tags, decode_spans, tokenize
from nm_toolkit.errors import UserError

CONFIG_FILE = "tagger_config.json"
MODEL_FILE = "tagger.joblib"
_MAX_GAZETTEER_TOKENS = 5


@dataclass(frozen=True)
class TaggerConfig:
    """Feature window and regularisation of :class:`SklearnIntentTagger`."""

    window: int = 2
    affix: int = 3
    C: float = 1.0
    max_iter: int = 300
    outside_penalty: float = 1.0  # log-probability taken off "O" at decoding: trades precision for recall
    gazetteer_min_count: int = 1


def _shape(word: str) -> str:
    """"16:00" -> "d:d", "Netflix" -> "Xx", "DPI" -> "X", "5" -> "d"."""
    shape = re.sub(r"[A-Z]+", "X", re.sub(r"[a-z]+", "x", re.sub(r"\d+", "d", word)))
    return shape


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


class SklearnIntentTagger:
    """BIO entity tagger: ``fit(intents)`` then ``predict_spans(texts)``."""

    def __init__(self, config: TaggerConfig = TaggerConfig()) -> None:
        self.config = config

    # -- features -----------------------------------------------------------------------------
    def _gazetteer_features(self, words: Sequence[str]) -> list[dict[str, float]]:
        feats: list[dict[str, float]] = [{} for _ in words]
        for i in range(len(words)):
            for n in range(1, _MAX_GAZETTEER_TOKENS + 1):
                gram = " ".join(words[i : i + n])
                if i + n > len(words):
                    break
                for kind in self.gazetteer_.get(gram, ()):
                    feats[i][f"gaz_begin={kind}"] = 1.0
                    for j in range(i, i + n):
                        feats[j][f"gaz_in={kind}"] = 1.0
                    if n > 1:
                        feats[i + n - 1][f"gaz_end={kind}"] = 1.0
        return feats

    def _features(self, tokens: Sequence[Token]) -> list[dict[str, float]]:
        cfg = self.config
        words = [t.text.lower() for t in tokens]
        gaz = self._gazetteer_features(words)
        out = []
        for i, word in enumerate(words):
            f: dict[str, float] = {"bias": 1.0, f"w={word}": 1.0, f"stem={_stem(word)}": 1.0, f"shape={_shape(tokens[i].text)}": 1.0}
            if i == 0:
                f["first"] = 1.0
            for d in (-2, -1, 0, 1, 2):
                if 0 <= i + d < len(words):
                    f.update({f"class{d:+d}={c}": 1.0 for c in word_classes(words[i + d])})
            for k in range(1, cfg.affix + 1):
                f[f"pre{k}={word[:k]}"] = 1.0
                f[f"suf{k}={word[-k:]}"] = 1.0
            for d in range(1, cfg.window + 1):
                f[f"w-{d}={words[i - d] if i - d >= 0 else '<s>'}"] = 1.0
                f[f"w+{d}={words[i + d] if i + d < len(words) else '</s>'}"] = 1.0
                if i - d >= 0:
                    f[f"shape-{d}={_shape(tokens[i - d].text)}"] = 1.0
                if i + d < len(words):
                    f[f"shape+{d}={_shape(tokens[i + d].text)}"] = 1.0
            f[f"bigram-={words[i - 1] if i else '<s>'}|{word}"] = 1.0
            f[f"bigram+={word}|{words[i + 1] if i + 1 < len(words) else '</s>'}"] = 1.0
            f.update(gaz[i])
            for d in (-1, 1):
                if 0 <= i + d < len(words):
                    f.update({f"{k}@{d:+d}": v for k, v in gaz[i + d].items()})
            out.append(f)
        return out

    # -- estimator ----------------------------------------------------------------------------
    def fit(self, intents: Sequence[LabelledIntent]) -> SklearnIntentTagger:
        if not intents:
            raise UserError("no training intents: pass a Nile-format file with at least one labelled intent")
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for item in intents:
            for span in item.spans:
                gram = " ".join(t.text.lower() for t in tokenize(span.text))
                if len(gram.split()) <= _MAX_GAZETTEER_TOKENS:
                    counts[gram][span.type] += 1
        self.gazetteer_ = {
            gram: sorted(k for k, c in kinds.items() if c >= self.config.gazetteer_min_count) for gram, kinds in counts.items()
        }
        rows, labels = [], []
        for item in intents:
            tokens = tokenize(item.text)
            rows += self._features(tokens)
            labels += bio_tags(tokens, item.spans)
        self.vectorizer_ = DictVectorizer()
        X = self.vectorizer_.fit_transform(rows)
        self.classifier_ = LogisticRegression(C=self.config.C, max_iter=self.config.max_iter)
        self.classifier_.fit(X, labels)
        self.tags_ = list(self.classifier_.classes_)
        self._allowed = _transition_mask(self.tags_)
        return self

    def predict_tags(self, tokens: Sequence[Token]) -> list[str]:
        if not tokens:
            return []
        log_p = self.classifier_.predict_log_proba(self.vectorizer_.transform(self._features(tokens)))
        log_p[:, self.tags_.index(OUTSIDE)] -= self.config.outside_penalty
        return [self.tags_[i] for i in _viterbi(log_p, self._allowed, self._starts())]

    def _starts(self) -> np.ndarray:
        return np.array([not t.startswith("I-") for t in self.tags_])

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """Labelled spans of each text (character offsets into that text)."""
        result = []
        for text in texts:
            tokens = tokenize(text)
            result.append(decode_spans(text, tokens, self.predict_tags(tokens)))
        return result

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps({"method": "sklearn", **asdict(self.config)}, indent=1))
        joblib.dump({"vectorizer": self.vectorizer_, "classifier": self.classifier_, "gazetteer": self.gazetteer_}, directory / MODEL_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path) -> SklearnIntentTagger:
        config_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
        if not (config_path.is_file() and model_path.is_file()):
            raise UserError(f"{directory} holds no sklearn intent tagger: train one with `nmt intent train --method sklearn -o {directory}`")
        data = json.loads(config_path.read_text())
        data.pop("method", None)
        tagger = cls(TaggerConfig(**data))
        state = joblib.load(model_path)
        tagger.vectorizer_, tagger.classifier_, tagger.gazetteer_ = state["vectorizer"], state["classifier"], state["gazetteer"]
        tagger.tags_ = list(tagger.classifier_.classes_)
        tagger._allowed = _transition_mask(tagger.tags_)
        return tagger


def _transition_mask(tags: Sequence[str]) -> np.ndarray:
    """``allowed[a, b]``: tag ``b`` may follow tag ``a`` (``I-x`` only after ``B-x`` or ``I-x``)."""
    allowed = np.ones((len(tags), len(tags)), dtype=bool)
    for b, tag in enumerate(tags):
        if tag.startswith("I-"):
            for a, prev in enumerate(tags):
                allowed[a, b] = prev != OUTSIDE and prev[2:] == tag[2:]
    return allowed


def _viterbi(log_p: np.ndarray, allowed: np.ndarray, starts: np.ndarray) -> list[int]:
    """The most probable tag sequence under the BIO constraints (per-token scores add up)."""
    n, k = log_p.shape
    penalty = np.where(allowed, 0.0, -np.inf)
    score = np.where(starts, log_p[0], -np.inf)
    back = np.zeros((n, k), dtype=int)
    for i in range(1, n):
        total = score[:, None] + penalty
        back[i] = total.argmax(axis=0)
        score = total.max(axis=0) + log_p[i]
    path = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]
