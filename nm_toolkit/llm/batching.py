"""Continuous batching: requests join and leave a running decode batch one token step at a time.

:meth:`AdapterLM.generate` runs a static batch: every row waits for the slowest one, and a request
that arrives mid-batch waits for the whole batch. Here each :meth:`ContinuousBatcher.step` decodes
one token for every active row; a row that ends (end-of-text, its ``max_new_tokens``, its timeout)
leaves at once, and waiting requests are prefilled and join the running batch in the same step.
On a CPU the per-step cost of a small model is mostly fixed overhead, so a wide batch costs little
more than one row and throughput grows with the number of rows kept busy.

The running batch lives in one preallocated KV slab per layer, ``(max_batch_size, heads, context +
slack, head_dim)``, left-padded: rows ``[0, active)`` are the running requests and every row's
cache ends at the same column, so a decode step writes one column in place (no per-step copy of
the whole cache, unlike ``DynamicCache``'s concatenation) and attends over a view of the used
columns. Row ``i``'s attention mask hides the columns that are not its own. Newcomers are
prefilled straight into free rows of the slab, ending at the running rows' column, so joining
copies nothing; a leaving row is replaced by the last running row (one row copied per departure)
and the all-padding columns on the left are dropped by moving a column index. The used columns
slide right one column per step and are moved back to column 0 when they reach the slab's end.
Positions are passed explicitly, so the padding
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
from transformers.cache_utils import Cache, CacheLayerMixin

from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import BASE, AdapterLM, Generation, GenerationLimits

_SLACK = 64  # slab columns past the context: the used columns slide right a column per step and move back to 0 once every ~64 steps


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """How wide the running batch may grow.

    ``max_batch_size`` bounds the rows decoded together (memory and the per-step latency every row
    pays); ``max_prefill`` bounds the newcomers prefilled in one step, so that a burst of arrivals
    stalls the rows already decoding for at most one prefill of that many prompts; ``max_context``
    bounds the tokens a row holds (prompt and answer), capped at the model's own context: the KV
    slab has a column per token for every row, and a pretrained LLaMA's 8,192 positions would
    make it gigabytes (SmolLM2-135M, 32 rows: 6 GB).
    """

    max_batch_size: int = 32
    max_prefill: int = 8
    max_context: int = 1024


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
    column: int = 0  # the slab column of its first cached token (columns before it are padding for this row)


@dataclass
class _Prefix:
    ids: list[int]
    caches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)  # per adapter: per layer (keys, values)


@dataclass
class _Window:
    """Where the next forward pass reads and writes in the slab: rows ``[first, last)``, past columns
    ``[read, write)``; its new keys and values go to the columns from ``write`` on."""

    first: int = 0
    last: int = 0
    read: int = 0
    write: int = 0


class _SlabLayer(CacheLayerMixin):
    """One attention layer's part of the slab: ``keys``/``values`` are the whole preallocated buffers.

    ``update`` copies the forward pass's new keys and values into the window's rows at its write
    column and returns a view of the window, so a decode step copies one column per row, not the cache.
    """

    is_sliding = False

    def __init__(self, window: _Window, rows: int, columns: int) -> None:
        super().__init__()
        self.window, self.rows, self.columns = window, rows, columns

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the buffers once the first keys show the heads, head size and dtype (GQA models have fewer key heads)."""
        self.keys = key_states.new_zeros((self.rows, key_states.shape[1], self.columns, key_states.shape[3]))
        self.values = value_states.new_zeros((self.rows, value_states.shape[1], self.columns, value_states.shape[3]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        w = self.window
        end = w.write + key_states.shape[-2]
        self.keys[w.first : w.last, :, w.write : end] = key_states
        self.values[w.first : w.last, :, w.write : end] = value_states
        return self.keys[w.first : w.last, :, w.read : end], self.values[w.first : w.last, :, w.read : end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.window.write - self.window.read + query_length, 0

    def get_seq_length(self) -> int:
        return self.window.write - self.window.read

    def get_max_length(self) -> int:
        return self.columns


class _Slab(Cache):
    """The running batch's KV cache: one :class:`_SlabLayer` per layer sharing one :class:`_Window`."""

    def __init__(self, layers: int, rows: int, columns: int) -> None:
        self.window = _Window()
        super().__init__(layers=[_SlabLayer(self.window, rows, columns) for _ in range(layers)])

    def ensure(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Allocate the buffers from per-layer example keys/values (a prefix's cache) before anything is written directly."""
        for layer, (k, v) in zip(self.layers, layers, strict=True):
            if not layer.is_initialized:
                layer.lazy_initialization(k, v)


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
        self._context = min(config.max_context, getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 1024))
        self._eos = lm.tokenizer.eos_token_id
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._waiting: deque[_Request] = deque()
        self._rows: list[_Request] = []
        # allocated here, filled lazily: the buffers take their shapes from the first keys written
        self._slab = _Slab(cfg.num_hidden_layers, config.max_batch_size, self._context + _SLACK)
        self._mask = torch.zeros((config.max_batch_size, self._context + _SLACK), dtype=torch.long)  # a row's ones: its cached columns
        self._start = self._end = 0  # the slab columns [start, end) hold every running row's cache; the next token goes to ``end``
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

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, names: list[str], cache: Cache | None
    ) -> tuple[torch.Tensor, Cache]:
        """Next-token logits of every row (only the last position goes through the LM head: a
        prefill's other positions would cost a vocabulary-wide matmul each) and the cache."""
        extra = {"adapter_names": names} if self._peft else {}
        if cache is not None:
            extra[self._cache_kw] = cache
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **extra)
        return out.logits[:, -1].float(), (out.cache if self._cache_kw == "cache" else out.past_key_values)

    def _run(self, first: int, last: int, read: int, ids: torch.Tensor, positions: torch.Tensor, names: list[str]) -> torch.Tensor:
        """Forward ``ids`` for slab rows ``[first, last)`` over their past columns ``[read, end - width)``, writing the new keys up to ``end``."""
        w = self._slab.window
        w.first, w.last, w.read, w.write = first, last, read, self._end - ids.shape[1]
        mask = self._mask[first:last, read : self._end].contiguous()  # the model reshapes it, so it cannot be a strided view
        return self._forward(ids, mask, positions, names, self._slab)[0]

    def _decode(self) -> torch.Tensor:
        if self._end == self._mask.shape[1]:  # the used columns reached the slab's end: move them back to column 0
            self._shift(-self._start)
        n = len(self._rows)
        self._mask[:n, self._end] = 1
        self._end += 1
        last = torch.tensor([[r.tokens[-1]] for r in self._rows])
        positions = torch.tensor([[len(r.ids) + len(r.tokens) - 1] for r in self._rows])
        return self._run(0, n, self._start, last, positions, [r.adapter for r in self._rows])

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
        banned = list(row.limits.suppress_tokens) + ([self._eos] if len(row.tokens) < row.limits.min_new_tokens else [])
        if banned:
            scores = scores.clone()
            scores[banned] = -float("inf")
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
        """Drop the finished rows: the last running rows move into their slab rows (the rest stay put)."""
        kept = [r for r in self._rows if not r.done]
        if len(kept) == len(self._rows):
            return
        n = len(kept)
        holes = [i for i, r in enumerate(self._rows[:n]) if r.done]
        movers = [i for i, r in enumerate(self._rows) if i >= n and not r.done]
        if holes:
            to, source = torch.tensor(holes), torch.tensor(movers)
            for layer in self._slab.layers:
                layer.keys[to, :, self._start : self._end] = layer.keys[source, :, self._start : self._end]
                layer.values[to, :, self._start : self._end] = layer.values[source, :, self._start : self._end]
            self._mask[to] = self._mask[source]
            for h, m in zip(holes, movers, strict=True):
                self._rows[h] = self._rows[m]
        self._rows = self._rows[:n]
        self._start = min((r.column for r in self._rows), default=self._end)

    def _shift(self, by: int) -> None:
        """Move the running rows' columns ``by`` columns (a copy of the used part of the slab)."""
        n, start, end = len(self._rows), self._start, self._end
        for layer in self._slab.layers:
            if layer.is_initialized:
                layer.keys[:n, :, start + by : end + by] = layer.keys[:n, :, start:end].clone()
                layer.values[:n, :, start + by : end + by] = layer.values[:n, :, start:end].clone()
        used = self._mask[:n, start:end].clone()
        self._mask[:n] = 0
        self._mask[:n, start + by : end + by] = used
        for r in self._rows:
            r.column += by
        self._start, self._end = start + by, end + by

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
        logits = self._prefill(joining)
        done = self._advance(joining, logits)
        self._retire()
        return expired + done

    def _prefill(self, rows: list[_Request]) -> torch.Tensor:
        """Left-padded forward pass over the newcomers' prompts (from a shared prefix's cache where one
        matches), written into the free slab rows so that their caches end where the running rows' do."""
        starts = [self._prefix_of(r) for r in rows]
        if max(len(p.ids) if p else 0 for p in starts) + max(len(r.ids) - (len(p.ids) if p else 0) for r, p in zip(rows, starts, strict=True)) > self._context:
            starts = [None] * len(rows)  # a long prefix beside a long unprefixed prompt would not fit the slab: prefill in full
        rest = [r.ids[len(p.ids) if p else 0 :] for r, p in zip(rows, starts, strict=True)]
        done = [len(p.ids) if p else 0 for p in starts]
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else self._eos
        width, past = max(len(x) for x in rest), max(done)
        if not self._rows:
            self._start = self._end = past + width
        elif self._end < past + width:
            self._shift(past + width - self._end)
        first, end = len(self._rows), self._end
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        self._mask[first : first + len(rows)] = 0
        for i, (row, prefix, x, d) in enumerate(zip(rows, starts, rest, done, strict=True)):
            ids[i, width - len(x) :] = torch.tensor(x)
            positions[i, width - len(x) :] = torch.arange(d, d + len(x))
            self._mask[first + i, end - len(x) : end] = 1
            row.column = end - len(x)
            if prefix is not None:
                cached = self._prefix_cache(prefix, row.adapter)
                self._slab.ensure(cached)
                at = end - width - d
                for layer, (k, v) in zip(self._slab.layers, cached, strict=True):
                    layer.keys[first + i, :, at : at + d] = k[0]
                    layer.values[first + i, :, at : at + d] = v[0]
                self._mask[first + i, at : at + d] = 1
                row.column = at
        logits = self._run(first, first + len(rows), end - width - past, ids, positions, [r.adapter for r in rows])
        for i, (row, prefix, x, d) in enumerate(zip(rows, starts, rest, done, strict=True)):
            if prefix is not None and len(x) < width:
                self._close_gap(first + i, row, prefix, end - len(x))
        self._start = min(self._start, *(r.column for r in rows))
        self._rows += rows
        return logits

    def _close_gap(self, index: int, row: _Request, prefix: _Prefix, to: int) -> None:
        """Copy the prefix's cache again right before the row's own tokens (ending at column ``to``).

        During the prefill a shorter prompt's padding sits between its prefix and its own tokens;
        left there, the gap would make a row's columns outgrow the slab. Copying a prefix is cheap.
        """
        d = len(prefix.ids)
        self._mask[index, : to - d] = 0
        for layer, (k, v) in zip(self._slab.layers, self._prefix_cache(prefix, row.adapter), strict=True):
            layer.keys[index, :, to - d : to] = k[0]
            layer.values[index, :, to - d : to] = v[0]
        self._mask[index, to - d : to] = 1
        row.column = to - d

    def _prefix_of(self, row: _Request) -> _Prefix | None:
        matches = [p for p in self._prefixes if len(p.ids) < len(row.ids) and row.ids[: len(p.ids)] == p.ids]
        return max(matches, key=lambda p: len(p.ids), default=None)

    def _prefix_cache(self, prefix: _Prefix, adapter: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if adapter not in prefix.caches:
            n = len(prefix.ids)
            _, cache = self._forward(
                torch.tensor([prefix.ids]), torch.ones((1, n), dtype=torch.long), torch.arange(n)[None], [adapter], None
            )
            prefix.caches[adapter] = [(layer.keys, layer.values) for layer in cache.layers]
        return prefix.caches[adapter]
