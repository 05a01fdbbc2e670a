"""Series as digit text, the way LLMTime (Gruver et al., NeurIPS 2023) feeds numbers to a language model.

Each window is divided by a high quantile of its own values, so that cells with ten or ten
thousand events read alike; values are then written at ``precision`` decimals with the decimal
point dropped and zero-padded to a fixed width (0.42 -> ``042``), separated by spaces.

Tokenisation is a stable digit grouping: every fixed-width value is one token, as GPT-4's
tokenizer groups digits in threes. A byte-pair tokenizer trained on text merges digits into
corpus-dependent chunks (``"42"`` one token, ``"103"`` two), so a model would see the same value
spelt differently from one series to the next. LLMTime's own fix, one token per digit, was tried
here first: after 300 pre-training and 30 tuning steps a tiny model still wrote no parseable
sample for any of four Milan cells, and with a value taking about four tokens a 256-token context
cannot hold the week of history that carries the weekly cycle. A value per token is also how Chronos (Ansari et al., 2024) tokenises series:
the model's next-token distribution is a distribution over quantised values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nm_toolkit.llm.tokenizer import END_OF_TEXT, PAD

DELIMITER = " "


@dataclass(frozen=True)
class DigitCodec:
    """How values become digit text: ``precision`` decimals after dividing by the ``alpha`` quantile.

    Values are written with ``precision + 1`` digits, so they span 0 to just under 10 times the
    scale; values outside that range (negative, or a burst ten times the usual peak) are clipped.
    """

    precision: int = 2
    alpha: float = 0.95

    @property
    def width(self) -> int:
        return self.precision + 1

    def scale(self, history: np.ndarray) -> float:
        """The divisor of a window: its ``alpha`` quantile of absolute values, else its largest, else 1."""
        finite = np.abs(np.asarray(history, dtype=float))
        finite = finite[np.isfinite(finite)]
        for candidate in (np.quantile(finite, self.alpha) if finite.size else 0.0, finite.max(initial=0.0)):
            if candidate > 0:
                return float(candidate)
        return 1.0

    def encode(self, values: np.ndarray, scale: float) -> str:
        """``values / scale`` at ``precision`` decimals, point dropped, zero-padded, space-separated."""
        top = 10**self.width - 1
        units = np.clip(np.rint(np.asarray(values, dtype=float) / scale * 10**self.precision), 0, top).astype(np.int64)
        return DELIMITER.join(f"{u:0{self.width}d}" for u in units)

    def decode(self, text: str, scale: float, count: int) -> np.ndarray | None:
        """The first ``count`` values of ``text``, or None when it does not hold that many well-formed ones.

        A generated sample is malformed when one of its first ``count`` fields is not exactly
        ``width`` digits (cut short, letters, a stray sign); such samples are dropped, not repaired.
        """
        fields = text.split()[:count]
        number = re.compile(rf"\d{{{self.width}}}")
        if len(fields) < count or not all(number.fullmatch(f) for f in fields):
            return None
        return np.array([int(f) for f in fields], dtype=float) * scale / 10**self.precision

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """One token per fixed-width value, plus end-of-text and padding (left, for batched generation)."""
        values = [f"{u:0{self.width}d}" for u in range(10**self.width)]
        vocab = {token: i for i, token in enumerate((END_OF_TEXT, PAD, *values))}
        backend = Tokenizer(models.WordLevel(vocab, unk_token=END_OF_TEXT))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT, pad_token=PAD,
            padding_side="left",
        )

    def fits(self, tokenizer: PreTrainedTokenizerFast) -> bool:
        """Whether ``tokenizer`` spells every value this codec writes as exactly one token of its own."""
        probe = self.encode(np.linspace(0, 10 - 10**-self.precision, 10**self.width), 1.0)
        ids = tokenizer(probe, add_special_tokens=False).input_ids
        return len(ids) == 10**self.width and len(set(ids)) == len(ids) and tokenizer.unk_token_id not in ids
