"""Continuous batching: requests join and leave a running decode batch one token step at a time.

:meth:`AdapterLM.generate` runs a static batch: every row waits for the slowest one, and a request
that arrives mid-batch waits for the whole batch. Here each :meth:`ContinuousBatcher.step` decodes
one token for every active row; a row that ends (end-of-text, its ``max_new_tokens``, its timeout)
leaves at once, and waiting requests are prefilled and join the running batch in the same step.
On a CPU the per-step cost of a small model is mostly fixed overhead, so a wide batch costs little
more than one row and throughput grows with the number of rows kept busy.

The running batch is one transformers KV cache, left-padded: row ``i``'s attention mask hides
the columns that are not its own. A newcomer's cache is padded on the
left to the batch's width (or the batch to the newcomer's) and appended; leaving rows are dropped
and the all-padding columns on the left are cut. Positions are passed explicitly, so the padding
changes neither GPT-2's learned positions nor LLaMA's rotary ones, and greedy outputs equal
one-request-at-a-time :meth:`AdapterLM.generate`. Rows may name different LoRA adapters (peft's
mixed-adapter batches), as in :meth:`AdapterLM.generate`.

Requests sharing a long prompt prefix (a system prompt, one site's location context) can reuse its
KV cache: :meth:`ContinuousBatcher.add_prefix` runs the prefix once per adapter and a prompt whose
tokens start with it is prefilled only from where the prefix ends.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import DynamicCache

from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import BASE, AdapterLM, Generation, GenerationLimits


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """How wide the running batch may grow.

    ``max_batch_size`` bounds the rows decoded together (memory and the per-step latency every row
    pays); ``max_prefill`` bounds the newcomers prefilled in one step, so that a burst of arrivals
    stalls the rows already decoding for at most one prefill of that many prompts.
    """

    max_batch_size: int = 32
    max_prefill: int = 8


@dataclass(frozen=True)
class Completed:
    """A finished request: its output and when it was submitted, started and finished (``clock`` seconds)."""

    handle: int
    generation: Generation
    submitted: float
    started: float
    done: float


@dataclass
class _Request:
    handle: int
    ids: list[int]
    adapter: str
    limits: GenerationLimits
    submitted: float
    started: float = 0.0
    tokens: list[int] = field(default_factory=list)
    done: bool = False  # finished and reported; leaves the batch at the next :meth:`ContinuousBatcher._retire`


@dataclass
class _Prefix:
    ids: list[int]
    caches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)  # per adapter: per layer (keys, values)


class ContinuousBatcher:
    """Serves :class:`AdapterLM` requests with continuous batching; not thread-safe (one driver loop).

    A stream service calls :meth:`submit` as requests arrive and :meth:`step` in its loop, and
    replies with every :class:`Completed` a step returns. :meth:`generate_all` is the batch-job
    form: it submits everything, steps until done and returns the generations in input order.
    A request's ``timeout_s`` counts from :meth:`submit`, queueing included, because the batcher
    owns the queue: a request whose time is up before it started ends with no tokens, unprefilled.
    """

    def __init__(
        self, lm: AdapterLM, config: BatcherConfig = BatcherConfig(), seed: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lm = lm
        self.config = config
        self.clock = clock
        self._peft = isinstance(lm.model, PeftModel)
        base = lm.model.get_base_model() if self._peft else lm.model
        self._cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"  # transformers >= 5.2x
        cfg = base.config
        self._context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 1024)
        self._eos = lm.tokenizer.eos_token_id
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._waiting: deque[_Request] = deque()
        self._rows: list[_Request] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, cache columns); a row's ones are its last columns
        self._prefixes: list[_Prefix] = []
        self._next_handle = 0

    @property
    def active(self) -> int:
        """Rows in the running batch."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        """Submitted requests not yet prefilled."""
        return len(self._waiting)

    def add_prefix(self, text: str) -> None:
        """Reuse the KV cache of ``text`` for every prompt whose tokens start with its tokens.

        The cache is computed lazily, once per adapter (a LoRA adapter changes keys and values).
        The match is on token ids, so a prompt whose tokenization differs at the prefix boundary is
        simply prefilled in full: reuse never changes an output.
        """
        ids = self.lm.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) >= 2:  # a prompt needs at least one token of its own after the prefix
            self._prefixes.append(_Prefix(ids))

    def submit(self, prompt: str, adapter: str = BASE, limits: GenerationLimits = GenerationLimits()) -> int:
        """Queue ``prompt`` for ``adapter``; returns the handle its :class:`Completed` will carry."""
        if adapter != BASE and (not self._peft or adapter not in self.lm.model.peft_config):
            loaded = ", ".join(self.lm.model.peft_config) if self._peft else "none"
            raise UserError(f"adapter {adapter!r} is not loaded (loaded: {loaded})")
        if limits.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        ids = self.lm.tokenizer(prompt, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError("an empty prompt has no state to continue from")
        if len(ids) >= self._context:
            raise UserError(f"a prompt of {len(ids)} tokens leaves no room to generate within the model's {self._context}-token context")
        handle = self._next_handle
        self._next_handle += 1
        self._waiting.append(_Request(handle, ids, adapter, limits, self.clock()))
        return handle

    @torch.no_grad()
    def step(self) -> list[Completed]:
        """Decode one token for every active row, then admit waiting requests; returns what finished."""
        done: list[Completed] = []
        if self._rows:
            logits = self._decode()
            done += self._advance(self._rows, logits)
            self._retire()
        done += self._admit()
        return done

    def generate_all(
        self, prompts: Sequence[str], adapters: Sequence[str] | None = None, limits: GenerationLimits | Sequence[GenerationLimits] = GenerationLimits()
    ) -> list[Generation]:
        """Complete ``prompts`` (row i with ``adapters[i]`` and ``limits[i]``); generations in input order."""
        names = list(adapters) if adapters is not None else [BASE] * len(prompts)
        per_row = [limits] * len(prompts) if isinstance(limits, GenerationLimits) else list(limits)
        if not len(names) == len(per_row) == len(prompts):
            raise ValueError(f"{len(prompts)} prompts, {len(names)} adapters and {len(per_row)} limits")
        handles = [self.submit(p, a, lim) for p, a, lim in zip(prompts, names, per_row, strict=True)]
        results: dict[int, Generation] = {}
        while self._rows or self._waiting:
            results.update((c.handle, c.generation) for c in self.step())
        return [results[h] for h in handles]

    # -- one step -------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, names: list[str], cache: DynamicCache | None):
        extra = {"adapter_names": names} if self._peft else {}
        if cache is not None:
            extra[self._cache_kw] = cache
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        return out.logits[:, -1].float(), (out.cache if self._cache_kw == "cache" else out.past_key_values)

    def _decode(self) -> torch.Tensor:
        last = torch.tensor([[r.tokens[-1]] for r in self._rows])
        mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=torch.long)], dim=1)
        positions = torch.tensor([[len(r.ids) + len(r.tokens) - 1] for r in self._rows])
        logits, self._cache = self._forward(last, mask, positions, [r.adapter for r in self._rows], self._cache)
        self._mask = mask
        return logits

    def _advance(self, rows: Sequence[_Request], logits: torch.Tensor) -> list[Completed]:
        """Pick each row's next token and report the rows that are done (they stay until :meth:`_retire`)."""
        now = self.clock()
        done = []
        for row, scores in zip(rows, logits, strict=True):
            token = self._choose(scores, row)
            row.tokens.append(token)
            ended = token == self._eos
            if ended or len(row.tokens) >= row.limits.max_new_tokens or now - row.submitted > row.limits.timeout_s or len(row.ids) + len(row.tokens) >= self._context:
                done.append(self._complete(row, ended, now))
        return done

    def _choose(self, scores: torch.Tensor, row: _Request) -> int:
        if len(row.tokens) < row.limits.min_new_tokens:
            scores = scores.clone()
            scores[self._eos] = -float("inf")
        if not row.limits.do_sample:
            return int(scores.argmax())
        scores = scores / row.limits.temperature
        if row.limits.top_k:
            kth = torch.topk(scores, min(row.limits.top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        return int(torch.multinomial(torch.softmax(scores, -1), 1, generator=self._generator))

    def _complete(self, row: _Request, ended: bool, now: float) -> Completed:
        tokens = row.tokens[:-1] if ended else row.tokens
        text = self.lm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        row.done = True
        return Completed(row.handle, Generation(text, len(tokens), row.adapter, ended), row.submitted, row.started, now)

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, torch.zeros((0, 0), dtype=torch.long)
            return
        index = torch.tensor(keep)
        self._mask = self._mask[index]
        unused = int((self._mask.cumsum(1) == 0).sum(1).min())  # leading columns that are padding in every row
        self._mask = self._mask[:, unused:]
        _set_layers(self._cache, [(k[index, :, unused:], v[index, :, unused:]) for k, v in _layers(self._cache)])

    # -- joining ----------------------------------------------------------------------------------

    def _admit(self) -> list[Completed]:
        """Prefill waiting requests into free rows; their first token comes from the prefill logits."""
        now = self.clock()
        expired, joining = [], []
        while self._waiting and len(joining) < min(self.config.max_prefill, self.config.max_batch_size - len(self._rows)):
            request = self._waiting.popleft()
            if now - request.submitted > request.limits.timeout_s:
                request.started = now
                expired.append(Completed(request.handle, Generation("", 0, request.adapter, False), request.submitted, now, now))
            else:
                request.started = now
                joining.append(request)
        if not joining:
            return expired
        logits, cache, mask = self._prefill(joining)
        self._join(joining, cache, mask)
        done = self._advance(joining, logits)
        self._retire()
        return expired + done

    def _prefill(self, rows: list[_Request]) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """Left-padded forward pass over the newcomers' prompts (from a shared prefix's cache where one matches)."""
        starts = [self._prefix_of(r) for r in rows]
        rest = [r.ids[len(p.ids) if p else 0 :] for r, p in zip(rows, starts, strict=True)]
        done = [len(p.ids) if p else 0 for p in starts]
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else self._eos
        width, past = max(len(x) for x in rest), max(done)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), past + width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (x, d) in enumerate(zip(rest, done, strict=True)):
            ids[i, width - len(x) :] = torch.tensor(x)
            mask[i, past - d : past] = 1
            mask[i, past + width - len(x) :] = 1
            positions[i, width - len(x) :] = torch.arange(d, d + len(x))
        cache = None
        if past:
            cached = [self._prefix_cache(p, r.adapter) if p else None for p, r in zip(starts, rows, strict=True)]
            cache = _cache_of(_stack_left([c for c in cached], past))
        logits, cache = self._forward(ids, mask, positions, [r.adapter for r in rows], cache)
        return logits, cache, mask

    def _prefix_of(self, row: _Request) -> _Prefix | None:
        matches = [p for p in self._prefixes if len(p.ids) < len(row.ids) and row.ids[: len(p.ids)] == p.ids]
        return max(matches, key=lambda p: len(p.ids), default=None)

    def _prefix_cache(self, prefix: _Prefix, adapter: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if adapter not in prefix.caches:
            n = len(prefix.ids)
            _, cache = self._forward(
                torch.tensor([prefix.ids]), torch.ones((1, n), dtype=torch.long), torch.arange(n)[None], [adapter], None
            )
            prefix.caches[adapter] = _layers(cache)
        return prefix.caches[adapter]

    def _join(self, rows: list[_Request], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append the newcomers' cache to the running one, left-padding whichever is narrower."""
        if self._cache is None:
            self._rows, self._cache, self._mask = list(rows), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        merged = [
            (torch.cat([_pad_left(k0, width), _pad_left(k1, width)]), torch.cat([_pad_left(v0, width), _pad_left(v1, width)]))
            for (k0, v0), (k1, v1) in zip(_layers(self._cache), _layers(cache), strict=True)
        ]
        _set_layers(self._cache, merged)
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self._rows += rows


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of shape (batch, heads, columns, head_dim); transformers >= 4.56's cache layout."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _set_layers(cache: DynamicCache, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace ``cache``'s tensors in place (no copy, unlike ``update`` on a fresh cache)."""
    for layer, (k, v) in zip(cache.layers, layers, strict=True):
        layer.keys, layer.values = k, v


def _cache_of(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def _pad_left(x: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """``x`` with zeros prepended along ``dim`` up to ``width`` (masked columns: their values are never read)."""
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _stack_left(caches: Sequence[list[tuple[torch.Tensor, torch.Tensor]] | None], width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch cache from per-row prefix caches (``None``: no prefix), each left-padded to ``width`` columns."""
    template = next(c for c in caches if c is not None)
    out = []
    for layer, (k, v) in enumerate(template):
        empty = (k.new_zeros((1, k.shape[1], 0, k.shape[3])), v.new_zeros((1, v.shape[1], 0, v.shape[3])))
        rows = [c[layer] if c is not None else empty for c in caches]
        out.append((torch.cat([_pad_left(rk, width) for rk, _ in rows]), torch.cat([_pad_left(rv, width) for _, rv in rows])))
    return out
