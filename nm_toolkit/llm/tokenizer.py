"""A byte-level BPE tokenizer trained on the toolkit's domain corpus (GPT-2's scheme, smaller vocab).

One change from GPT-2: every digit is its own pre-token (as in LLaMA), so a number is always the
same sequence of digit tokens wherever it appears. Cell ids and distances are then copied from the
context one digit at a time, instead of through merges that split "4401" and " 360" differently
from one number to the next.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
PAD = "<pad>"
# GPT-2's pre-tokenizer pattern with ``\p{N}+`` (runs of digits) narrowed to ``\p{N}`` (one digit).
_PRE_TOKEN = Regex(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts``: any UTF-8 input encodes, domain words get single tokens, digits one each."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(_PRE_TOKEN, behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=PAD,
        padding_side="left",
    )
