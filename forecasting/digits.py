"""Series as digit text, the way LLMTime (Gruver et al., NeurIPS 2023) feeds numbers to a language model.

Each window is divided by a high quantile of its own values, so that cells with ten or ten
thousand events read alike; values are then written at ``precision`` decimals with the decimal
point dropped. Two spellings, one per kind of tokenizer, each checked against the tokenizer
(``fits``) before a model reads it:

- :class:`SpacedDigitCodec`, for the serving edge model's byte-level BPE tokenizer: LLMTime's own
  spelling, one digit at a time with a space before each and a comma after each value
  (0.42 -> `` 4 2,``). A BPE tokenizer merges runs of digits into corpus-dependent chunks
  (``"42"`` one token, ``"105"`` two), so a model would see the same value spelt differently from
  one series to the next; a space before every digit makes GPT-2's pre-tokenizer cut each digit
  on its own, so every value is spelt by the same tokens wherever it stands (two to three tokens a
  value: a 256-token model reads about three days next to a day-long chunk, not a week).
- :class:`DigitCodec`, for a base built with its own vocabulary (``forecasting.llm.build_digit_base``):
  zero-padded fixed-width values (0.42 -> ``042``), one token each, as Chronos (Ansari et al.,
  2024) tokenises series, so a week of hourly values fits a 256-token context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from nm_toolkit.llm.tokenizer import END_OF_TEXT, PAD

DELIMITER = " "


@dataclass(frozen=True)
class DigitCodec:
    """How values become digit text: ``precision`` decimals after dividing by the ``alpha`` quantile,
    each value one fixed-width field of ``precision + 1`` digits.

    Values span 0 to just under 10 times the scale; values outside that range (negative, or a
    burst ten times the usual peak) are clipped.
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

    def units(self, values: np.ndarray, scale: float) -> np.ndarray:
        """``values / scale`` in units of the last decimal, clipped to what ``width`` digits hold."""
        top = 10**self.width - 1
        return np.clip(np.rint(np.asarray(values, dtype=float) / scale * 10**self.precision), 0, top).astype(np.int64)

    def encode(self, values: np.ndarray, scale: float) -> str:
        """``values / scale`` at ``precision`` decimals, point dropped, zero-padded, space-separated."""
        return DELIMITER.join(f"{u:0{self.width}d}" for u in self.units(values, scale))

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

    def token_costs(self, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
        """Tokens each unit value takes (index: the unit): one each, once :meth:`fits` holds."""
        return np.ones(10**self.width, dtype=np.int64)

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

    def fits(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether ``tokenizer`` spells every value this codec writes as exactly one token of its own."""
        probe = self.encode(np.linspace(0, 10 - 10**-self.precision, 10**self.width), 1.0)
        ids = tokenizer(probe, add_special_tokens=False).input_ids
        return len(ids) == 10**self.width and len(set(ids)) == len(ids) and tokenizer.unk_token_id not in ids


SEPARATOR = ","


@dataclass(frozen=True)
class SpacedDigitCodec(DigitCodec):
    """LLMTime's spelling for a text model's tokenizer: no leading zeros, a space before every digit,
    a comma after every value (``[0.42, 1.05, 0.07]`` at scale 1 -> `` 4 2, 1 0 5, 7,``)."""

    def field(self, unit: int) -> str:
        return "".join(f" {d}" for d in str(int(unit))) + SEPARATOR

    def encode(self, values: np.ndarray, scale: float) -> str:
        return "".join(self.field(u) for u in self.units(values, scale))

    def decode(self, text: str, scale: float, count: int) -> np.ndarray | None:
        """The first ``count`` comma-terminated values of ``text``, or None when it does not hold that
        many well-formed ones (digits with single spaces between them; more digits than ``width``
        hold are clipped, as :meth:`encode` clips)."""
        fields = text.split(SEPARATOR)[:-1][:count]  # what follows the last comma may be cut short
        number = re.compile(r"\d( \d)*")
        if len(fields) < count or not all(number.fullmatch(f.strip()) for f in fields):
            return None
        units = np.minimum([int(f.replace(" ", "")) for f in fields], 10**self.width - 1)
        return units.astype(float) * scale / 10**self.precision

    def token_costs(self, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
        fields = [self.field(u) for u in range(10**self.width)]
        return np.array([len(ids) for ids in tokenizer(fields, add_special_tokens=False).input_ids], dtype=np.int64)

    def fits(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether ``tokenizer`` spells every value the same way wherever it stands: the tokens of a
        run of values are the tokens of each value on its own, one after the other, and they decode
        back to the text (no unknown tokens, no merges across a digit or a value)."""
        fields = [self.field(u) for u in range(10**self.width)]
        alone = tokenizer(fields, add_special_tokens=False).input_ids
        together = tokenizer("".join(fields), add_special_tokens=False).input_ids
        flat = [i for ids in alone for i in ids]
        return together == flat and tokenizer.unk_token_id not in flat and tokenizer.decode(flat) == "".join(fields)


def codec_for(tokenizer: PreTrainedTokenizerBase, precision: int = 2, alpha: float = 0.95) -> DigitCodec:
    """The spelling ``tokenizer`` reads consistently: a value per token when its vocabulary has one,
    else LLMTime's spaced digits; None of the two -> ValueError."""
    for codec in (DigitCodec(precision, alpha), SpacedDigitCodec(precision, alpha)):
        if codec.fits(tokenizer):
            return codec
    raise ValueError("the tokenizer spells digits inconsistently in both the fixed-width and the spaced-digit text")
