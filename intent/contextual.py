"""Contextual word classes from the pretrained LLaMA: what role a word plays in *this* sentence.

The lexicon and the wordllama clusters (:mod:`intent.embed`) say what a word is out of context:
"students" is a population wherever it stands. Whether it is the subject of a rule ("Students may
not ..."), the object of its preposition ("... for students"), or part of an aside ("... at the
request of the students' union") is in the sentence around it, and a pretrained language model
reads that. SmolLM2-135M-Instruct (:mod:`nm_toolkit.llm.pretrained`), cut to its first
``LAYERS`` blocks so that one sentence costs a few milliseconds on one thread, gives every token a
hidden state; a word's state is the mean over its BPE pieces, and its contextual class is the
nearest of :data:`CLASSES` centroids (cosine), fitted once by k-means over the words of
synthetic policy prose (:mod:`intent.prose`, no labels used) and kept next to this module
(``smollm2_contexts.safetensors``), so classes never change between runs. The span taggers read
the classes of a candidate's first and last word and of the words either side as features, like
the wordllama clusters.

Without the pretrained checkpoint in the model cache (``nmt llm fetch``), the classes are all
:data:`NO_CONTEXT` and the taggers read only their other features; :func:`available` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from intent.data import Token

LAYERS = int(__import__("os").environ.get("NMT_CTX_LAYERS", "4"))  # blocks of SmolLM2 run: the cost is linear in them (bench/RESULTS.md, issue 25)
CLASSES = 96
CENTROIDS_FILE = Path(__file__).with_name("smollm2_contexts.safetensors")
NO_CONTEXT = "none"


@lru_cache(maxsize=1)
def _encoder() -> tuple[object, object] | None:
    """SmolLM2's tokenizer and its first ``LAYERS`` blocks, or None without the checkpoint."""
    from nm_toolkit.llm.offline import load_causal_lm
    from nm_toolkit.llm.pretrained import pretrained_dir

    directory = pretrained_dir()
    if not (directory / "config.json").is_file():
        return None
    model, tokenizer = load_causal_lm(directory)
    body = model.model
    body.layers = body.layers[:LAYERS]
    body.eval()
    return tokenizer, body


def available() -> bool:
    return _encoder() is not None and CENTROIDS_FILE.is_file()


@torch.no_grad()
def word_states(text: str, tokens: Sequence[Token]) -> np.ndarray | None:
    """Unit-length hidden state of each token of ``text`` (the mean of the BPE pieces it overlaps), or None without the model."""
    encoder = _encoder()
    if encoder is None or not tokens:
        return None
    tokenizer, body = encoder
    encoded = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")  # type: ignore[operator]
    states = body(input_ids=encoded["input_ids"]).last_hidden_state[0].numpy()  # type: ignore[operator]
    offsets = encoded["offset_mapping"][0].tolist()
    out = np.zeros((len(tokens), states.shape[1]), dtype=np.float32)
    for k, token in enumerate(tokens):
        pieces = [p for p, (a, b) in enumerate(offsets) if a < token.end and token.start < b]
        out[k] = states[pieces].mean(0) if pieces else 0.0
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


@lru_cache(maxsize=1)
def _centroids() -> np.ndarray | None:
    return load_file(str(CENTROIDS_FILE))["centroids"] if CENTROIDS_FILE.is_file() else None


def context_classes(text: str, tokens: Sequence[Token]) -> tuple[str, ...]:
    """The contextual class of each token (:data:`NO_CONTEXT` for all without the model or centroids)."""
    centroids = _centroids()
    states = word_states(text, tokens) if centroids is not None else None
    if states is None or centroids is None:
        return (NO_CONTEXT,) * len(tokens)
    return tuple(str(int(c)) for c in np.argmax(states @ centroids.T, axis=1))


def fit_centroids(texts: Sequence[str], classes: int = CLASSES, seed: int = 0) -> np.ndarray:
    """Unit-length k-means centroids of the word states of ``texts``."""
    from sklearn.cluster import KMeans

    from intent.data import tokenize

    states = [s for text in texts if (s := word_states(text, tokenize(text))) is not None]
    if not states:
        raise RuntimeError("SmolLM2 is not in the model cache: run `nmt llm fetch` first")
    centroids = KMeans(classes, random_state=seed, n_init=3).fit(np.concatenate(states)).cluster_centers_
    return (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)


if __name__ == "__main__":
    from intent.prose import ProseConfig, policy_prose

    torch.set_num_threads(1)
    prose = [item.text for item in policy_prose(ProseConfig(sentences=1500, seed=7))]
    save_file({"centroids": fit_centroids(prose)}, str(CENTROIDS_FILE))
    print(f"wrote {CENTROIDS_FILE}")
