"""One base model with several LoRA adapters loaded at once, generating for a batch of requests.

Requests in one batch may each name a different adapter: peft's mixed-adapter batches route every
row through its own LoRA weights, so the service batches by arrival, not by adapter. Inputs are
left-padded so that every row's next token sits in the last column and the KV cache is reused.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.errors import UserError
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.quantize import quantize_dynamic_int8

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass(frozen=True, kw_only=True)
class GenerationLimits:
    """Bounds every request is held to; greedy decoding unless ``do_sample``."""

    max_input_tokens: int = 256
    max_new_tokens: int = 64
    min_new_tokens: int = 0  # end-of-text is masked out until this many tokens are written
    timeout_s: float = 30.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    suppress_tokens: tuple[int, ...] = ()  # never written (a trend forecast writes digits and commas only)


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    adapter: str
    finished: bool  # ended with end-of-text, not cut by max_new_tokens or the timeout


class AdapterLM:
    """A causal LM plus the adapters loaded into it, keyed by adapter name."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cards: Sequence[AdapterCard] = ()) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cards = {card.name: card for card in cards}

    @classmethod
    def load(
        cls, base_dir: Path, registry: AdapterRegistry | None = None, adapters: Sequence[str] | None = None, quantize: bool = False
    ) -> AdapterLM:
        """The base checkpoint with ``adapters`` (default: every adapter in ``registry``) loaded;
        ``quantize``: int8 base weights under float adapters (:mod:`nm_toolkit.llm.quantize`)."""
        lm = cls(*load_causal_lm(base_dir))
        if registry is not None:
            for card in [registry.card(name) for name in adapters] if adapters is not None else registry.cards():
                lm._attach(card, registry.path(card.name))
        if quantize:
            lm.model = quantize_dynamic_int8(lm.model)
        return lm

    def add_adapter(self, registry: AdapterRegistry, name: str) -> None:
        """Load adapter ``name`` from ``registry`` next to those already loaded. Call it between
        batches (no request in flight); a loaded adapter is left as it is."""
        if name not in self.cards:
            self._attach(registry.card(name), registry.path(name))

    def _attach(self, card: AdapterCard, path: Path) -> None:
        """Load the adapter of ``card`` from ``path`` into the model."""
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=card.name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=card.name, is_trainable=False)
        self.model.eval()
        self.cards[card.name] = card
        self._keep_an_active_adapter()

    def remove_adapter(self, name: str) -> None:
        """Unload adapter ``name`` (its memory is freed); between batches, as :meth:`add_adapter`."""
        if name not in self.cards:
            return
        assert isinstance(self.model, PeftModel)
        self.model.delete_adapter(name)
        del self.cards[name]
        self._keep_an_active_adapter()

    def _keep_an_active_adapter(self) -> None:
        """peft keeps one adapter active and looks it up on every forward pass, even when each
        row names its own: after the active one is deleted, make a loaded one active."""
        if isinstance(self.model, PeftModel) and self.cards and self.model.active_adapter not in self.cards:
            self.model.set_adapter(next(iter(self.cards)))

    def select(self, task: str | None, location_group: str | None, adapter: str | None = None) -> str:
        """The adapter for a request: the one it names, else the task's adapter for its location group,
        else the task's adapter for every location, else the base model when no adapters are loaded."""
        if adapter is not None:
            if adapter != BASE and adapter not in self.cards:
                raise UserError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.cards) or 'none'})")
            return adapter
        if not self.cards:
            return BASE
        for_task = [c for c in self.cards.values() if task is None or c.task == task]
        if not for_task:
            raise UserError(f"no adapter for task {task!r} (tasks: {', '.join(sorted({c.task for c in self.cards.values()}))})")
        for card in for_task:
            if location_group and location_group in card.location_groups:
                return card.name
        general = [c for c in for_task if not c.location_groups]
        return (general or for_task)[0].name

    def _row_adapters(self, adapters: Sequence[str] | None, rows: int) -> list[str]:
        """Each row's adapter name (default: the base model); adapters need a model that has some."""
        names = list(adapters) if adapters is not None else [BASE] * rows
        if not isinstance(self.model, PeftModel) and any(n != BASE for n in names):
            raise UserError("adapters were requested but none are loaded: pass --adapters-dir with trained adapters")
        return names

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False).input_ids]

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], adapters: Sequence[str] | None = None, limits: GenerationLimits = GenerationLimits(), seed: int | None = None
    ) -> list[Generation]:
        """Complete ``prompts`` in one batch; ``adapters[i]`` is row i's adapter (default: base model)."""
        names = self._row_adapters(adapters, len(prompts))
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        config = GenerationConfig(
            max_new_tokens=limits.max_new_tokens, min_new_tokens=limits.min_new_tokens or None, do_sample=limits.do_sample, temperature=limits.temperature if limits.do_sample else None,
            top_k=limits.top_k if limits.do_sample else None, top_p=None, use_cache=True, max_time=limits.timeout_s,
            suppress_tokens=list(limits.suppress_tokens) or None,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id, bos_token_id=None,
        )
        extra = {"adapter_names": names} if isinstance(self.model, PeftModel) else {}
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(**batch, generation_config=config, **extra)
        new = output[:, batch["input_ids"].shape[1] :]
        results = []
        for row, name in zip(new, names, strict=True):
            ids = row.tolist()
            finished = self.tokenizer.eos_token_id in ids
            length = ids.index(self.tokenizer.eos_token_id) if finished else len(ids)
            text = self.tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
            results.append(Generation(text, length, name, finished))
        return results

    @torch.no_grad()
    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str], adapters: Sequence[str] | None = None, max_length: int | None = None
    ) -> list[list[float]]:
        """Per-token log-probabilities of ``continuations[i]`` given ``prompts[i]``, in one forward pass.

        Prompt and continuation are tokenized apart and joined, as fine-tuning encodes its pairs
        (:func:`nm_toolkit.llm.training.encode_pair`), and right-padded; a row longer than
        ``max_length`` (default: the model's context) loses tokens from the left of its prompt.
        ``adapters[i]`` is row i's adapter (default: the base model). Row i's list has one entry per
        token of ``continuations[i]`` as :meth:`continuation_tokens` splits it.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        if not prompts:
            return []
        names = self._row_adapters(adapters, len(prompts))
        limit = max_length or getattr(self.model.config, "n_positions", None) or getattr(self.model.config, "max_position_embeddings", 1024)
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=False).input_ids
        cont_ids = self.continuation_tokens(continuations)
        rows = []
        for p, c in zip(prompt_ids, cont_ids, strict=True):
            if not c:
                raise ValueError("an empty continuation has no log-probability to score")
            ids = (p + c)[-limit:]
            if len(ids) == len(c):
                raise ValueError(f"a continuation of {len(c)} tokens leaves no room for its prompt within {limit} tokens")
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        extra = {"adapter_names": names} if isinstance(self.model, PeftModel) else {}
        logits = self.model(input_ids=input_ids, attention_mask=mask, **extra).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
        out = []
        for i, (ids, c) in enumerate(zip(rows, cont_ids, strict=True)):
            # token t of the row is predicted at position t - 1; the continuation is the row's tail
            out.append(logprobs[i, len(ids) - len(c) - 1 : len(ids) - 1].tolist())
        return out

    def continuation_tokens(self, continuations: Sequence[str]) -> list[list[int]]:
        """Token ids of each continuation, tokenized on its own (as a fine-tuning target is)."""
        return self.tokenizer(list(continuations), add_special_tokens=False).input_ids

    @torch.no_grad()
    def shared_prefix_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], adapters: Sequence[str] | None = None
    ) -> list[list[list[float]]]:
        """:meth:`continuation_logprobs` for several continuations of each prompt, each prompt run once.

        Two batched passes instead of one: the prompts (left-padded) fill a KV cache, which is then
        repeated for every continuation of its prompt, and the continuations (right-padded) are
        scored on it. ``out[i][j]`` is the per-token log-probabilities of ``continuations[i][j]``.
        Rows must fit the model's context (no truncation here).
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts for {len(continuations)} lists of continuations")
        if not prompts:
            return []
        names = self._row_adapters(adapters, len(prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=False).input_ids
        width = max(len(p) for p in prompt_ids)
        ids1 = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask1 = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            if not p:
                raise ValueError("an empty prompt has no state to continue from")
            ids1[i, width - len(p) :] = torch.tensor(p)
            mask1[i, width - len(p) :] = 1
        pos1 = (mask1.cumsum(-1) - 1).clamp(min=0)
        extra = {"adapter_names": names} if isinstance(self.model, PeftModel) else {}
        first = self.model(input_ids=ids1, attention_mask=mask1, position_ids=pos1, use_cache=True, **extra)
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"  # transformers >= 5.2x
        owner = [i for i, conts in enumerate(continuations) for _ in conts]
        flat = [c for conts in continuations for c in conts]
        if not flat:
            return [[] for _ in prompts]
        cont_ids = self.continuation_tokens(flat)
        if any(not c for c in cont_ids):
            raise ValueError("an empty continuation has no log-probability to score")
        cont_width = max(len(c) for c in cont_ids)
        ids2 = torch.full((len(flat), cont_width), pad, dtype=torch.long)
        mask2 = torch.zeros((len(flat), cont_width), dtype=torch.long)
        for j, c in enumerate(cont_ids):
            ids2[j, : len(c)] = torch.tensor(c)
            mask2[j, : len(c)] = 1
        index = torch.tensor(owner)
        cache = first.cache if cache_kw == "cache" else first.past_key_values
        cache.batch_select_indices(index)
        lengths = mask1.sum(-1)[index]
        pos2 = lengths[:, None] + torch.arange(cont_width)[None, :]
        extra2 = {"adapter_names": [names[i] for i in owner]} if isinstance(self.model, PeftModel) else {}
        second = self.model(
            input_ids=ids2, attention_mask=torch.cat([mask1[index], mask2], dim=1), position_ids=pos2, use_cache=True, **{cache_kw: cache}, **extra2
        )
        # token 0 of a continuation is predicted by the prompt's last position, token t by position t - 1
        logits = torch.cat([first.logits[index, -1:], second.logits[:, :-1]], dim=1).float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids2[..., None])[..., 0]
        out: list[list[list[float]]] = [[] for _ in prompts]
        for j, (i, c) in enumerate(zip(owner, cont_ids, strict=True)):
            out[i].append(logprobs[j, : len(c)].tolist())
        return out
