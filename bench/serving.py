"""Serving speed of the edge model (issue 12), every figure next to its same-run baseline.

One freshly built model (``nmt model init`` with a short pre-training), one arrival pattern
(``--requests`` location-completion prompts arriving with Poisson gaps at ``--rate`` per second,
sharing ``--contexts`` location contexts, each with its own ``max_new_tokens``), served four ways in real time on ``--threads`` CPU threads:

1. one at a time: ``AdapterLM.generate`` on each request in arrival order (the baseline);
2. static batches: whenever the server is free, every request that has arrived (up to
   ``--max-batch``) goes into one ``AdapterLM.generate`` call with the batch's largest
   ``max_new_tokens``; a row's tokens beyond its own limit are not counted;
3. continuous batching: :class:`nm_toolkit.llm.batching.ContinuousBatcher`;
4. continuous batching reusing each location context's KV cache (the prompt up to ``request:``);
5. with LoRA adapters: the first ``--lora-requests`` requests, each naming one of two fresh LoRA
   adapters or the base model, one at a time and with continuous batching (peft mixed-adapter rows).

tokens/s is generated tokens over the time from the first arrival to the last reply; latency is
from a request's arrival to its reply. Then fp32 vs int8 (dynamic quantisation of the base weights):
ms per generated token one at a time, share of identical greedy completions, size of the weights.

    OMP_NUM_THREADS=1 python bench/serving.py --requests 96 --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from nm_toolkit.llm.batching import BatcherConfig, ContinuousBatcher
from nm_toolkit.llm.completion_data import build_completion_dataset
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import BASE, AdapterLM, GenerationLimits
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import DEFAULT_TARGET_MODULES
from nm_toolkit.llm.pretrained import fetch_pretrained
from nm_toolkit.llm.quantize import serialized_mb


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds after the start of the run
    prompt: str
    limits: GenerationLimits
    adapter: str = BASE


@dataclass(frozen=True)
class Run:
    tokens: int
    seconds: float
    latencies: list[float]
    texts: list[str]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def workload(n: int, rate: float, seed: int, contexts: int, min_new: int, max_new: int) -> list[Request]:
    """``n`` completion prompts with Poisson arrivals, their location contexts drawn from ``contexts``.

    An edge site serves a few cells, and a context (cell, time of day, user profile, nearby places)
    is most of a prompt's tokens, so requests in a busy spell share a few contexts: each prompt here
    is one of ``contexts`` contexts followed by the request line of another example.
    """
    rng = random.Random(seed)
    store = synthetic_city(seed=seed, districts=3, cells_per_district=2, users=6)
    examples, _ = build_completion_dataset(store, n + contexts, 1, seed=seed)
    heads = [e.input.rsplit("request:", 1)[0] for e in examples[:contexts]]
    t, out = 0.0, []
    for e in examples[contexts:]:
        prompt = rng.choice(heads) + "request:" + e.input.rsplit("request:", 1)[1]
        out.append(Request(t, prompt, GenerationLimits(max_new_tokens=rng.randint(min_new, max_new), timeout_s=600.0)))
        t += rng.expovariate(rate)
    return out


def serve(requests: Sequence[Request], handle: Callable[[list[Request]], list[tuple[int, str]]], take: int) -> Run:
    """Replay ``requests`` in real time: whenever the server is free it gets up to ``take`` arrived
    requests; ``handle`` returns (tokens, text) per request, all replied when it returns."""
    start = time.perf_counter()
    queue: deque[int] = deque()
    arrived, latencies, texts, tokens = 0, [0.0] * len(requests), [""] * len(requests), 0
    while arrived < len(requests) or queue:
        now = time.perf_counter() - start
        while arrived < len(requests) and requests[arrived].arrival <= now:
            queue.append(arrived)
            arrived += 1
        if not queue:
            time.sleep(max(0.0, requests[arrived].arrival - now))
            continue
        batch = [queue.popleft() for _ in range(min(take, len(queue)))]
        results = handle([requests[i] for i in batch])
        done = time.perf_counter() - start
        for i, (n, text) in zip(batch, results, strict=True):
            latencies[i], texts[i] = done - requests[i].arrival, text
            tokens += n
    return Run(tokens, time.perf_counter() - start, latencies, texts)


def one_at_a_time(lm: AdapterLM, requests: Sequence[Request]) -> Run:
    def handle(batch: list[Request]) -> list[tuple[int, str]]:
        g = lm.generate([batch[0].prompt], [batch[0].adapter], limits=batch[0].limits)[0]
        return [(g.new_tokens, g.text)]

    return serve(requests, handle, 1)


def static_batches(lm: AdapterLM, requests: Sequence[Request], max_batch: int) -> Run:
    def handle(batch: list[Request]) -> list[tuple[int, str]]:
        longest = max(batch, key=lambda r: r.limits.max_new_tokens).limits
        gens = lm.generate([r.prompt for r in batch], [r.adapter for r in batch], limits=longest)
        return [(min(g.new_tokens, r.limits.max_new_tokens), g.text) for g, r in zip(gens, batch, strict=True)]

    return serve(requests, handle, max_batch)


def continuous(lm: AdapterLM, requests: Sequence[Request], config: BatcherConfig, prefixes: Sequence[str] = ()) -> Run:
    batcher = ContinuousBatcher(lm, config)
    for prefix in prefixes:
        batcher.add_prefix(prefix)
    start = time.perf_counter()
    handles: dict[int, int] = {}
    latencies, texts, tokens, arrived, replied = [0.0] * len(requests), [""] * len(requests), 0, 0, 0
    while replied < len(requests):
        now = time.perf_counter() - start
        while arrived < len(requests) and requests[arrived].arrival <= now:
            handles[batcher.submit(requests[arrived].prompt, requests[arrived].adapter, requests[arrived].limits)] = arrived
            arrived += 1
        if not batcher.active and not batcher.waiting:
            time.sleep(max(0.0, requests[arrived].arrival - now))
            continue
        for c in batcher.step():
            i = handles[c.handle]
            latencies[i], texts[i] = time.perf_counter() - start - requests[i].arrival, c.generation.text
            tokens += c.generation.new_tokens
            replied += 1
    return Run(tokens, time.perf_counter() - start, latencies, texts)


def with_lora(lm: AdapterLM, arch: str, names: Sequence[str]) -> AdapterLM:
    """``lm`` with fresh LoRA adapters: random A and B (not peft's B = 0), so that each changes the
    outputs and "same text" checks that every row went through its own adapter."""
    model = lm.model
    for i, name in enumerate(names):
        config = LoraConfig(r=8, lora_alpha=16, target_modules=list(DEFAULT_TARGET_MODULES[arch]), init_lora_weights=False, fan_in_fan_out=arch == "gpt2")
        torch.manual_seed(i)
        if isinstance(model, PeftModel):
            model.add_adapter(name, config)
        else:
            model = get_peft_model(model, config, adapter_name=name)
    return AdapterLM(model.eval(), lm.tokenizer)


def print_runs(runs: dict[str, Run], base: Run) -> None:
    for name, run in runs.items():
        same = sum(a == b for a, b in zip(run.texts, base.texts, strict=True)) / len(run.texts)
        print(f"{name:40} {run.tokens:7d} {run.tokens_per_s:9.1f} {run.tokens_per_s / base.tokens_per_s:6.1f}x "
              f"{percentile(run.latencies, 0.5):7.2f} {percentile(run.latencies, 0.95):7.2f} {same:9.0%}")


def ms_per_token(lm: AdapterLM, requests: Sequence[Request]) -> tuple[float, list[str]]:
    started, tokens, texts = time.perf_counter(), 0, []
    for r in requests:
        g = lm.generate([r.prompt], limits=r.limits)[0]
        tokens += g.new_tokens
        texts.append(g.text)
    return 1000 * (time.perf_counter() - started) / max(1, tokens), texts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="mean arrivals per second (Poisson)")
    parser.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    parser.add_argument("--preset", default="edge", help="model preset; 'tiny' for a quick check")
    parser.add_argument("--steps", type=int, default=120, help="pre-training steps of the fresh model")
    parser.add_argument("--contexts", type=int, default=8, help="distinct location contexts the prompts share")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--min-new", type=int, default=8)
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--int8-requests", type=int, default=24, help="requests for the fp32/int8 comparison")
    parser.add_argument("--lora-requests", type=int, default=32, help="requests for the LoRA comparison (0: skip it)")
    parser.add_argument("--model", help="serve this checkpoint directory ('pretrained': SmolLM2-135M-Instruct, fetched once) instead of a fresh one")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    if args.model is not None:
        directory = fetch_pretrained() if args.model == "pretrained" else Path(args.model)
        lm = AdapterLM.load(directory)
        int8 = AdapterLM.load(directory, quantize=True)
        lora = with_lora(AdapterLM.load(directory), lm.model.config.model_type, ("north", "south"))
        print(f"model: {directory} ({lm.model.config.model_type}, {sum(p.numel() for p in lm.model.parameters()):,} parameters); "
              f"{args.threads} thread(s)", flush=True)  # fmt: skip
    else:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "edge"
            config = InitConfig(
                arch=args.arch, preset=args.preset, steps=args.steps, batch_size=8, max_length=160, seed=args.seed,
                corpus=CorpusConfig(user_prompts=400, intents=200, telemetry=200, contexts=300, vocabulary_repeats=1),
            )
            model, tokenizer, losses, facts = initialise_model(config)
            save_initialised(directory, model, tokenizer, losses, facts)
            print(f"model: {args.arch}/{args.preset}, {facts['parameters']:,} parameters, {args.steps} steps (final loss {facts['final_loss']}), "
                  f"built in {time.perf_counter() - began:.0f} s; {args.threads} thread(s)", flush=True)
            lm = AdapterLM.load(directory)
            int8 = AdapterLM.load(directory, quantize=True)
            lora = with_lora(AdapterLM.load(directory), args.arch, ("north", "south"))

    requests = workload(args.requests, args.rate, args.seed, args.contexts, args.min_new, args.max_new)
    prefixes = sorted({r.prompt.rsplit("request:", 1)[0] for r in requests})
    prompt_tokens = statistics.mean(lm.token_counts([r.prompt for r in requests]))
    print(f"workload: {len(requests)} requests over {requests[-1].arrival:.1f} s (Poisson, {args.rate:g}/s), "
          f"prompts {prompt_tokens:.0f} tokens on average, {len(prefixes)} distinct location contexts, "
          f"max_new_tokens {args.min_new}-{args.max_new}", flush=True)
    batcher_config = BatcherConfig(max_batch_size=args.max_batch, max_prefill=8)
    runs = {
        "one at a time (generate)": one_at_a_time(lm, requests),
        f"static batches <= {args.max_batch} (generate)": static_batches(lm, requests, args.max_batch),
        f"continuous batching <= {args.max_batch}": continuous(lm, requests, batcher_config),
        "  + shared context KV reuse": continuous(lm, requests, batcher_config, prefixes),
    }
    base = runs["one at a time (generate)"]
    print(f"\n{'serving':40} {'tokens':>7} {'tokens/s':>9} {'x base':>7} {'p50 s':>7} {'p95 s':>7} {'same text':>9}")
    print_runs(runs, base)
    if args.lora_requests:
        mixed = [dataclasses.replace(r, adapter=("north", "south", BASE)[i % 3]) for i, r in enumerate(requests[: args.lora_requests])]
        lora_base = one_at_a_time(lora, mixed)
        print_runs({f"LoRA mix, {len(mixed)} requests: one at a time": lora_base, f"LoRA mix: continuous batching <= {args.max_batch}": continuous(lora, mixed, batcher_config)}, lora_base)
    print("(same text: share of completions identical to one-at-a-time; static batches run every row to the batch's "
          "largest max_new_tokens, so their texts run longer and only tokens within a row's own limit count)")

    sample = requests[: args.int8_requests]
    fp32_ms, fp32_texts = ms_per_token(lm, sample)
    int8_ms, int8_texts = ms_per_token(int8, sample)
    agree = sum(a == b for a, b in zip(fp32_texts, int8_texts, strict=True)) / len(sample)
    int8_cb = continuous(int8, requests, batcher_config)
    print(f"\n{'weights':40} {'MB':>7} {'ms/token':>9} {'x fp32':>7} {'same text':>9} {'CB tok/s':>9}")
    print(f"{'fp32':40} {serialized_mb(lm.model):7.2f} {fp32_ms:9.2f} {1.0:6.2f}x {1.0:9.0%} {runs[f'continuous batching <= {args.max_batch}'].tokens_per_s:9.1f}")
    print(f"{'int8 dynamic (lm_head and embeddings fp32)':40} {serialized_mb(int8.model):7.2f} {int8_ms:9.2f} {fp32_ms / int8_ms:6.2f}x {agree:9.0%} {int8_cb.tokens_per_s:9.1f}")
    print(f"(ms/token: one at a time over {len(sample)} requests; same text: greedy completions identical to fp32; "
          f"CB tok/s: continuous batching on the workload above)")
    print(f"\ntotal {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
