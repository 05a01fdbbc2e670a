"""LoRA fine-tuning with peft and the on-disk registry of adapters it produces.

An adapter is small (kilobytes to a few megabytes), so an edge site keeps many of them next to one
base model and picks one per request: per task ("prompt_completion", "intent", ...) and per
location group (a district or a set of cells whose users behave alike).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.errors import UserError
from nm_toolkit.llm.card import write_card
from nm_toolkit.llm.training import IGNORE, StepCallback, encode_pair, mean_loss, resolve_device, train

# peft asks transformers 5 a question it has deprecated; nothing a user of `nmt` can act on
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
ADAPTER_CARD = "nmt_adapter.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class LoraTrainConfig:
    """LoRA shape and the fine-tuning schedule."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_length: int = 256
    seed: int = 0
    # Also train the embedding rows of the tokens the targets contain. Tokens the base model's
    # corpus (almost) never held, such as JSON punctuation, keep near-random embeddings that
    # low-rank updates of the blocks cannot make the model emit; training those few rows can.
    train_target_embeddings: bool = False
    device: str = "cpu"  # where to train: cpu, cuda, auto; the fitted model is returned on the CPU


@dataclass(frozen=True)
class AdapterCard:
    """What an adapter is for and how it was made; stored next to its weights."""

    name: str
    task: str
    base: str
    location_groups: tuple[str, ...] = ()
    train_examples: int = 0
    train_seconds: float = 0.0
    heldout_loss_before: float | None = None
    heldout_loss_after: float | None = None
    config: dict[str, object] = field(default_factory=dict)


class LoraFineTuner:
    """Fits a LoRA adapter on (input, target) pairs; the base model's weights stay frozen."""

    def __init__(self, config: LoraTrainConfig = LoraTrainConfig()) -> None:
        self.config = config

    def fit(
        self,
        base: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pairs: Sequence[tuple[str, str]],
        adapter_name: str = "default",
        on_step: StepCallback | None = None,
    ) -> LoraFineTuner:
        cfg = self.config
        targets = list(cfg.target_modules or DEFAULT_TARGET_MODULES.get(base.config.model_type, ()))
        if not targets:
            raise UserError(f"no default LoRA target modules for {base.config.model_type!r}: pass --target-modules")
        missing = [t for t in targets if not any(n.endswith(t) for n, _ in base.named_modules())]
        if missing:
            raise UserError(f"target modules {missing} are not in the {base.config.model_type} model: check --target-modules")
        examples = [encode_pair(tokenizer, prefix, target, cfg.max_length) for prefix, target in pairs]
        target_tokens = sorted({t for _, labels in examples for t in labels if t != IGNORE}) if cfg.train_target_embeddings else None
        lora = LoraConfig(
            r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM",
            fan_in_fan_out=base.config.model_type == "gpt2",  # GPT-2 stores its linear layers transposed (Conv1D)
            trainable_token_indices=target_tokens,
        )
        self.model_ = get_peft_model(base.to(resolve_device(cfg.device)), lora, adapter_name=adapter_name)
        steps = max(1, round(cfg.epochs * len(examples) / cfg.batch_size))
        started = time.perf_counter()
        self.losses_ = train(self.model_, examples, tokenizer.pad_token_id, steps, cfg.batch_size, cfg.learning_rate, cfg.seed, on_step)
        self.seconds_ = time.perf_counter() - started
        self.model_.to("cpu")
        self.examples_ = len(examples)
        return self

    def heldout_loss(self, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]) -> float:
        """Mean target-token loss of the fitted model on ``pairs``."""
        return heldout_loss(self.model_, tokenizer, pairs, self.config.max_length)


def heldout_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], max_length: int = 256) -> float:
    examples = [encode_pair(tokenizer, prefix, target, max_length) for prefix, target in pairs]
    return mean_loss(model, examples, tokenizer.pad_token_id)


class AdapterRegistry:
    """A directory of adapters, one sub-directory each (peft's files plus an :class:`AdapterCard`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise UserError(f"invalid adapter name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        return self.root / name

    def save(self, model: PeftModel, card: AdapterCard, losses: Sequence[float]) -> Path:
        directory = self.path(card.name)
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, selected_adapters=[card.name] if card.name in model.peft_config else None)
        _flatten_adapter_dir(directory, card.name)
        (directory / ADAPTER_CARD).write_text(json.dumps(asdict(card), indent=1))
        summary = f"LoRA adapter `{card.name}` for task `{card.task}` on base `{card.base}`."
        write_card(directory, f"adapter {card.name}", summary, asdict(card), losses)
        return directory

    def card(self, name: str) -> AdapterCard:
        path = self.path(name) / ADAPTER_CARD
        if not path.is_file():
            known = ", ".join(c.name for c in self.cards()) or "none"
            raise UserError(f"no adapter {name!r} in {self.root} (known: {known}): train one with `nmt model finetune`")
        data = json.loads(path.read_text())
        data["location_groups"] = tuple(data.get("location_groups", ()))
        return AdapterCard(**data)

    def cards(self) -> list[AdapterCard]:
        if not self.root.is_dir():
            return []
        return [self.card(p.name) for p in sorted(self.root.iterdir()) if (p / ADAPTER_CARD).is_file()]


def _flatten_adapter_dir(directory: Path, name: str) -> None:
    """peft writes non-default adapters into ``directory/name``; keep one flat layout per adapter."""
    nested = directory / name
    if nested.is_dir():
        for item in nested.iterdir():
            item.replace(directory / item.name)
        nested.rmdir()
