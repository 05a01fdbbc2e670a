"""The LLM path: the edge model, LoRA-tuned to write an intent's entities as JSON.

``fit`` starts from a local base checkpoint (``nmt model init``) or, without one, initialises a
base model in-process from a preset; it then fits a LoRA adapter (task ``intent``) on
(prompt, entity JSON) pairs. ``generate`` decodes greedily under :mod:`intent.constrained`, so the
output is schema-valid JSON whose spans are words of the input by construction; ``predict_spans``
still reads it through :mod:`intent.llm_output` (defence in depth: the reader trusts nothing).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import torch

from intent.constrained import IntentGrammar, SchemaLogitsProcessor, VocabularyTrie
from intent.data import LabelledIntent, Span
from intent.llm_output import ParsedOutput, parse_llm_output, target_json
from nm_toolkit.errors import UserError

ADAPTER = "intent"
CONFIG_FILE = "llm_intent_config.json"
MAX_LENGTH = 256  # the edge preset's context


@dataclass(frozen=True)
class LlmIntentConfig:
    """Base model (a checkpoint directory, or a preset to initialise), LoRA shape and schedule."""

    base_model: str | None = None
    preset: str = "edge"
    base_steps: int = 300
    rank: int = 16
    epochs: float = 30.0
    learning_rate: float = 3e-3
    batch_size: int = 16
    max_new_tokens: int = 160  # more than the longest target in the Nile file (115 tokens)
    num_beams: int = 1  # beam search under the grammar; 1 is greedy
    seed: int = 0


def normalise(text: str) -> str:
    """The text as the model sees it: runs of whitespace collapsed to one space."""
    return " ".join(text.split())


def prompt(text: str) -> str:
    return f"intent: {normalise(text)}\njson: "


class LlmIntentExtractor:
    """``fit(intents)`` then ``predict_spans(texts)`` or ``parse(texts)`` (with repair notes)."""

    def __init__(self, config: LlmIntentConfig = LlmIntentConfig()) -> None:
        self.config = config

    def _base(self):  # type: ignore[no-untyped-def]
        from nm_toolkit.llm.init import InitConfig, initialise_model
        from nm_toolkit.llm.offline import load_causal_lm

        if self.config.base_model:
            return load_causal_lm(Path(self.config.base_model))
        model, tokenizer, _, _ = initialise_model(InitConfig(preset=self.config.preset, steps=self.config.base_steps, seed=self.config.seed))
        return model, tokenizer

    def fit(self, intents: Sequence[LabelledIntent]) -> LlmIntentExtractor:
        if not intents:
            raise UserError("no training intents: pass a Nile-format file with at least one labelled intent")
        base, self.tokenizer_ = self._base()  # imports nm_toolkit.llm, which pins the hub offline before peft imports transformers
        from nm_toolkit.llm.lora import LoraFineTuner, LoraTrainConfig

        self._base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}  # LoRA wraps the layers in place
        cfg = self.config
        # The JSON's punctuation tokens ('{"', '":[', ...) never occur in the base model's corpus:
        # without their embedding rows trained too, the training loss stalls near 4.3.
        tuner = LoraFineTuner(LoraTrainConfig(rank=cfg.rank, alpha=2 * cfg.rank, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                              learning_rate=cfg.learning_rate, max_length=MAX_LENGTH, seed=cfg.seed,
                                              train_target_embeddings=True))
        tuner.fit(base, self.tokenizer_, [(prompt(i.text), target_json(list(i.spans))) for i in intents], adapter_name=ADAPTER)
        self.model_ = tuner.model_
        self.losses_ = tuner.losses_
        return self

    @torch.no_grad()
    def generate(self, texts: Sequence[str]) -> list[str]:
        """The most likely outputs (greedy, or beam search), each within the intent grammar of its own text."""
        # imported here, after fit or from_pretrained imported nm_toolkit.llm (which pins the hub offline)
        from transformers import LogitsProcessorList

        tokenizer = self.tokenizer_
        context = self.model_.get_base_model().config.max_position_embeddings
        outputs: list[str] = []
        for start in range(0, len(texts), 16):
            chunk = [normalise(t) for t in texts[start : start + 16]]
            batch = tokenizer([prompt(t) for t in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            width = batch["input_ids"].shape[1]
            if width + 8 > context:
                raise UserError(f"an intent text is {width} tokens long, too long for the model's {context}-token context: split it into shorter intents")
            schema = SchemaLogitsProcessor([IntentGrammar(t) for t in chunk], self._vocabulary, width, tokenizer.eos_token_id, self.config.num_beams)
            generated = self.model_.generate(
                **batch, logits_processor=LogitsProcessorList([schema]), max_new_tokens=min(self.config.max_new_tokens, context - width), do_sample=False, num_beams=self.config.num_beams,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
            )
            for row in generated[:, width:].tolist():
                length = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row)
                outputs.append(tokenizer.decode(row[:length], skip_special_tokens=True))
        return outputs

    @cached_property
    def _vocabulary(self) -> VocabularyTrie:
        return VocabularyTrie(self.tokenizer_)

    def parse(self, texts: Sequence[str]) -> list[ParsedOutput]:
        return [parse_llm_output(text, output) for text, output in zip(texts, self.generate(texts), strict=True)]

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        return [parsed.spans for parsed in self.parse(texts)]

    def save_pretrained(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        from transformers import AutoModelForCausalLM

        self.model_.save_pretrained(directory / "adapter")
        base = AutoModelForCausalLM.from_config(self.model_.get_base_model().config)
        base.load_state_dict(self._base_state)
        base.save_pretrained(directory / "base", safe_serialization=True)
        self.tokenizer_.save_pretrained(directory / "base")
        (directory / CONFIG_FILE).write_text(json.dumps({"method": "llm", **asdict(self.config)}, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path) -> LlmIntentExtractor:
        from peft import PeftModel

        from nm_toolkit.llm.offline import load_causal_lm

        path = directory / CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{directory} holds no LLM intent model: train one with `nmt intent train --method llm -o {directory}`")
        data = json.loads(path.read_text())
        data.pop("method", None)
        extractor = cls(replace(LlmIntentConfig(**data), base_model=str(directory / "base")))
        base, extractor.tokenizer_ = load_causal_lm(directory / "base")
        adapter_dir = directory / "adapter" / ADAPTER  # peft nests non-default adapters by name
        extractor._base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        extractor.model_ = PeftModel.from_pretrained(base, adapter_dir, adapter_name=ADAPTER, is_trainable=False)
        extractor.model_.eval()
        return extractor
