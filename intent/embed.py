"""Word clusters from pretrained embeddings: knowledge of words the 150 labelled intents never show.

`wordllama <https://pypi.org/project/wordllama/>`_ ships, inside its wheel, a 256-dimensional vector
for each of the 32,000 Llama-2 BPE pieces (``weights/l2_supercat_256.safetensors``) and their
tokenizer; nothing is downloaded. A word's vector is the mean of its pieces' vectors, and its
cluster is that of the nearest of :data:`CLUSTERS` centroids (cosine), fitted once by k-means over
the word-initial alphabetic pieces (:func:`fit_centroids`) and kept next to this module
(``wordllama_clusters.safetensors``), so clusters never change between runs or machines. The
taggers use the cluster ids as features ("hulu" shares a cluster with words seen in training as
services; "contractors" with "professors"): +0.012 grouped micro-F1 for the vote on fold seeds 0
and 1 (bench/RESULTS.md, issue 14).

The files are read from the installed package directly because ``WordLlama.load()`` (0.4.0.post1)
looks for its tokenizer under ``tokenizer/`` while the wheel holds ``tokenizers/``, and then tries
to download it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

CLUSTERS = 128
CENTROIDS_FILE = Path(__file__).with_name("wordllama_clusters.safetensors")
NO_CLUSTER = "none"  # a token without letters: numbers, punctuation


def _load_pieces() -> tuple[object, np.ndarray]:
    """wordllama's tokenizer and its unit-length piece vectors (float32), from the installed wheel."""
    from tokenizers import Tokenizer

    package = resources.files("wordllama")
    vectors = load_file(str(package / "weights" / "l2_supercat_256.safetensors"))["embedding.weight"].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return Tokenizer.from_str((package / "tokenizers" / "l2_supercat_tokenizer_config.json").read_text()), vectors


def fit_centroids(clusters: int = CLUSTERS, seed: int = 0) -> np.ndarray:
    """Unit-length k-means centroids of the word-initial alphabetic pieces ("▁students", not "ors").

    Run once to write :data:`CENTROIDS_FILE` (``python -m intent.embed``); about a minute."""
    from sklearn.cluster import MiniBatchKMeans

    tokenizer, vectors = _load_pieces()
    rows = sorted(i for piece, i in tokenizer.get_vocab().items() if piece.startswith("\u2581") and piece[1:].isalpha() and len(piece) >= 4)  # type: ignore[attr-defined]
    centroids = MiniBatchKMeans(clusters, random_state=seed, n_init=3, batch_size=4096).fit(vectors[rows]).cluster_centers_
    return (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=1)
def _model() -> tuple[object, np.ndarray, np.ndarray]:
    tokenizer, vectors = _load_pieces()
    return tokenizer, vectors, load_file(str(CENTROIDS_FILE))["centroids"]


@lru_cache(maxsize=65536)
def word_cluster(word: str) -> str:
    """The cluster id of ``word`` (lower-case), or :data:`NO_CLUSTER` for a token without letters."""
    if not any(ch.isalpha() for ch in word):
        return NO_CLUSTER
    tokenizer, vectors, centroids = _model()
    pieces = tokenizer.encode(word, add_special_tokens=False).ids  # type: ignore[attr-defined]
    return str(int(np.argmax(centroids @ vectors[pieces].mean(0))))


if __name__ == "__main__":
    save_file({"centroids": fit_centroids()}, str(CENTROIDS_FILE))
    print(f"wrote {CENTROIDS_FILE}")
