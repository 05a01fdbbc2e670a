"""Model sizes the toolkit builds from a transformers config when no pretrained weights exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import GPT2Config, LlamaConfig, PretrainedConfig

Arch = Literal["gpt2", "llama"]
ARCHS: tuple[str, ...] = ("gpt2", "llama")


@dataclass(frozen=True)
class ModelPreset:
    """Shape of a decoder-only transformer; the same numbers serve GPT-2 and LLaMA."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    context: int
    vocab_size: int


PRESETS: dict[str, ModelPreset] = {
    # for tests: builds and trains in seconds
    "tiny": ModelPreset(layers=2, hidden=64, heads=2, intermediate=128, context=256, vocab_size=1024),
    # the edge model: a few million parameters, fast on one CPU core
    "edge": ModelPreset(layers=4, hidden=192, heads=4, intermediate=576, context=256, vocab_size=2048),
    # a larger edge model (about 5 M parameters) for sites with a little more CPU
    "edge-large": ModelPreset(layers=6, hidden=256, heads=4, intermediate=1024, context=256, vocab_size=2048),
    # the cloud model: several times larger
    "cloud": ModelPreset(layers=6, hidden=384, heads=6, intermediate=1024, context=512, vocab_size=4096),
}


def transformers_config(arch: Arch, preset: ModelPreset, vocab_size: int, eos_id: int, pad_id: int) -> PretrainedConfig:
    """The transformers config of ``arch`` with ``preset``'s shape and the tokenizer's ids."""
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=preset.context, n_embd=preset.hidden, n_layer=preset.layers,
            n_head=preset.heads, n_inner=preset.intermediate, bos_token_id=eos_id, eos_token_id=eos_id,
            pad_token_id=pad_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=preset.hidden, intermediate_size=preset.intermediate,
            num_hidden_layers=preset.layers, num_attention_heads=preset.heads, num_key_value_heads=preset.heads,
            max_position_embeddings=preset.context, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id,
            tie_word_embeddings=True,
        )
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHS}")

