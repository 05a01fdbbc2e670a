"""``nmt model init``: a domain model from scratch (tokenizer, config, brief pre-training, card)."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.llm.card import write_card
from nm_toolkit.llm.corpus import CorpusConfig, build_corpus
from nm_toolkit.llm.presets import PRESETS, Arch, transformers_config
from nm_toolkit.llm.tokenizer import train_bpe_tokenizer
from nm_toolkit.llm.training import StepCallback, encode_pair, resolve_device, train


@dataclass(frozen=True)
class InitConfig:
    """Everything that determines an initialised model; the same config and seed give the same weights."""

    arch: Arch = "gpt2"
    preset: str = "edge"
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_length: int = 192
    seed: int = 0
    device: str = "cpu"  # where to pre-train: cpu, cuda, auto; the saved model is loaded on the CPU
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    intents_file: Path | None = None
    cdr_file: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def initialise_model(
    config: InitConfig, on_step: StepCallback | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[float], dict[str, object]]:
    """Build the corpus, tokenizer and model, pre-train for ``config.steps``; returns loss curve and facts."""
    preset = PRESETS[config.preset]
    device = resolve_device(config.device)
    seed_everything(config.seed)
    docs = build_corpus(config.corpus, config.intents_file, config.cdr_file)
    tokenizer = train_bpe_tokenizer(docs, preset.vocab_size)
    model_config = transformers_config(config.arch, preset, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    seed_everything(config.seed)
    model = AutoModelForCausalLM.from_config(model_config).to(device)
    examples = [encode_pair(tokenizer, "", doc, config.max_length) for doc in docs]
    started = time.perf_counter()
    losses = train(model, examples, tokenizer.pad_token_id, config.steps, config.batch_size, config.learning_rate, config.seed, on_step)
    model.to("cpu")
    facts: dict[str, object] = {
        "arch": config.arch,
        "preset": config.preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_config": {k: v for k, v in model_config.to_diff_dict().items() if k != "transformers_version"},
        "seed": config.seed,
        "init_config": {k: v for k, v in asdict(config).items() if k != "corpus"},
        "corpus": {**asdict(config.corpus), "documents": len(docs), "tokens": sum(len(ids) for ids, _ in examples)},
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(tokenizer)},
        "train_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
    }
    return model, tokenizer, losses, facts


def save_initialised(directory: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, losses: list[float], facts: dict[str, object]) -> None:
    """``save_pretrained`` (safetensors) for model and tokenizer, plus the model card."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    summary = (
        f"A {facts['arch']} causal LM ({facts['parameters']:,} parameters) built by `nmt model init` from a "
        "transformers config and pre-trained briefly on the toolkit's generated domain corpus "
        "(user prompts, operator intents, serialised telemetry, edge location context, network vocabulary)."
    )
    write_card(directory, f"nm-toolkit {facts['preset']} {facts['arch']}", summary, facts, losses)
