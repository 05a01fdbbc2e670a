"""Benchmark of the edge and cloud LLMs (issue 4), every figure next to its same-run baseline.

1. completion quality on the held-out split (unseen districts and phrasings): the LoRA-tuned edge
   model vs the un-tuned base model (exact match, ROUGE-L);
2. NetGPT edge/cloud split: edge and cloud latency, bytes sent edge -> cloud vs a cloud-only
   deployment that ships the raw location context, model memory;
3. serving: the edge stream service (embedded bus, micro-batches) vs one request at a time
   (``EdgeCompleter.complete``) on the same model and the same burst of requests: tokens/s,
   p50/p95 latency;
4. LoRA fine-tuning seconds per 1,000 examples, and peak RSS of the process.

    python bench/llm.py --intents /work/shared/data/nile_intents_alpha.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.llm.completion_data import build_completion_dataset
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import BASE, AdapterLM, Generation, GenerationLimits
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import CloudResponder, EdgeCompleter, EdgeRequest, PreparedRequest, evaluate_completion
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.service import EdgeService, ServiceLimits


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def model_mb(lm: AdapterLM) -> float:
    return sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20


def build_model(directory: Path, config: InitConfig) -> float:
    started = time.perf_counter()
    model, tokenizer, losses, facts = initialise_model(config)
    save_initialised(directory, model, tokenizer, losses, facts)
    print(f"  {config.arch}/{config.preset}: {facts['parameters']:,} parameters, {config.steps} steps, final loss {facts['final_loss']}, {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def describe_checkpoint(directory: Path) -> str:
    """How a checkpoint in the work directory was made (a reused one may come from another machine)."""
    card = json.loads((directory / "nmt_card.json").read_text()) if (directory / "nmt_card.json").is_file() else {}
    init = card.get("init_config", {})
    if not init:
        return f"{directory} (no nmt card: not built by nmt model init)"
    return (
        f"{init['preset']} {init['arch']}, {card['parameters']:,} parameters, {init['steps']:,} steps x {init['batch_size']} documents "
        f"({card['corpus']['documents']:,}-document corpus) on {card.get('train_device', 'cpu')} in {card['train_seconds']:.0f} s, "
        f"final loss {card['final_loss']}"
    )


class CountingCompleter:
    """``completer`` as the edge service uses it, counting the new tokens of every completion it
    returns (an escalated request's record carries the completed prompt, not its token count)."""

    def __init__(self, completer: EdgeCompleter) -> None:
        self.completer = completer
        self.new_tokens = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.completer, name)

    def complete(self, prepared: list[PreparedRequest], seed: int | None = None) -> list[Generation]:
        generations = self.completer.complete(prepared, seed)
        self.new_tokens += sum(g.new_tokens for g in generations)
        return generations


def serve_batched(completer: EdgeCompleter, requests: list[bytes], max_batch: int) -> tuple[list[float], int, float]:
    """The burst through the edge stream service on the embedded bus, in micro-batches of up to
    ``max_batch``: latencies from each prompt's arrival on the bus, new tokens, seconds.

    The service as :func:`nm_toolkit.llm.service.edge_service` builds it, less what the
    one-at-a-time baseline does not do either: no link probes, no load telemetry, no service-class
    intents (one more model pass per batch), no adapter placement. ``completer`` generates freely,
    so the router sends every completed prompt to the cloud topic, or answers it at the edge where
    the privacy guardrail keeps it there; either way the prompt is served once."""
    counted = CountingCompleter(completer)
    bus = EmbeddedBus()
    producer = bus.producer()
    started = time.perf_counter()
    for value in requests:
        producer.send("prompts", value)
    service = EdgeService(
        counted,  # type: ignore[arg-type]
        prompts_topic="prompts", answers_topic="answers", cloud_topic="cloud", status_topic="status", group_id="bench",
        dead_letter_topic="prompts.dlq", limits=ServiceLimits(max_batch=max_batch, request_timeout_s=600), probe_interval_s=0,
    )  # fmt: skip
    run_until_idle([StreamRunner(bus, service)])
    elapsed = time.perf_counter() - started
    answers = [json.loads(m.value) for m in bus.messages("answers")]
    escalated = [r for r in (json.loads(m.value) for m in bus.messages("cloud")) if r.get("kind", "request") == "request"]
    assert all(r["status"] == "ok" for r in answers), [r.get("reason") for r in answers if r["status"] != "ok"]
    assert len(answers) + len(escalated) == len(requests), (len(answers), len(escalated), len(requests))
    latencies = [r["latency_ms"] for r in answers] + [r["edge_sent_ms"] - r["arrived_ms"] for r in escalated]
    return latencies, counted.new_tokens, elapsed


def serve_sequential(completer: EdgeCompleter, requests: list[EdgeRequest]) -> tuple[list[float], int, float]:
    """The baseline: the same burst, completed one request at a time (``EdgeCompleter.complete``
    on one prepared request); latencies from the common arrival time, new tokens, seconds."""
    latencies, tokens = [], 0
    started = time.perf_counter()
    for request in requests:
        generation = completer.complete([completer.prepare(request)])[0]
        tokens += generation.new_tokens
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies, tokens, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=Path, help="Nile intents JSON added to the pre-training corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edge-preset", default="edge")
    parser.add_argument("--cloud-preset", default="cloud")
    parser.add_argument("--edge-steps", type=int, default=1000)
    parser.add_argument("--cloud-steps", type=int, default=80)
    parser.add_argument("--edge-batch", type=int, default=16, help="documents per edge pre-training step")
    parser.add_argument("--corpus-scale", type=float, default=1.0, help="edge pre-training corpus size, times the default")
    parser.add_argument("--device", default="cpu", help="pre-train and fine-tune on cpu, cuda or auto; serving is on the CPU")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=2.5)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep models here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nmt-bench-llm-"))
    edge_dir, cloud_dir, registry = work / "edge", work / "cloud", AdapterRegistry(work / "adapters")

    print(f"building models in {work}", flush=True)
    if not (edge_dir / "config.json").is_file():
        build_model(edge_dir, InitConfig(
            arch="gpt2", preset=args.edge_preset, steps=args.edge_steps, batch_size=args.edge_batch, seed=args.seed,
            device=args.device, corpus=CorpusConfig().scaled(args.corpus_scale), intents_file=args.intents,
        ))
    if not (cloud_dir / "config.json").is_file():
        build_model(cloud_dir, InitConfig(
            arch="llama", preset=args.cloud_preset, steps=args.cloud_steps, seed=args.seed, device=args.device, intents_file=args.intents
        ))

    print(f"  edge model: {describe_checkpoint(edge_dir)}", flush=True)

    store = synthetic_city(seed=args.seed + 1)
    train, test = build_completion_dataset(store, args.train, args.test, seed=args.seed + 1)
    model, tokenizer = load_causal_lm(edge_dir)
    config = LoraTrainConfig(rank=args.rank, alpha=2 * args.rank, epochs=args.epochs, learning_rate=args.lr, seed=args.seed, device=args.device)
    tuner = LoraFineTuner(config).fit(model, tokenizer, [(e.input, " " + e.target) for e in train], "completion")
    seconds_per_1000 = 1000 * tuner.seconds_ / (args.epochs * len(train))
    registry.save(tuner.model_, AdapterCard("completion", "prompt_completion", str(edge_dir), train_examples=len(train),
                                            train_seconds=tuner.seconds_, config=asdict(config)), tuner.losses_)
    print(f"  LoRA: {len(train)} examples x {args.epochs} epochs in {tuner.seconds_:.0f} s, final loss {tuner.losses_[-1]:.3f}", flush=True)

    # The 30 s default timeout guards a live service; on shared, contended CPUs it would cut batches
    # mid-sentence and score the contention instead of the model, so the bench allows 10 minutes.
    limits = GenerationLimits(max_new_tokens=72, timeout_s=600)
    # free generation, as in runs 1-6 (bench/grounding.py compares it with grounded choice)
    edge = EdgeCompleter(AdapterLM.load(edge_dir, registry), store, limits, grounded=False)
    tuned, tuned_out = evaluate_completion(edge, test, "completion")
    base, _ = evaluate_completion(edge, test, BASE)

    cloud = CloudResponder(AdapterLM.load(cloud_dir), GenerationLimits(max_new_tokens=32))
    cloud_ms = []
    for generation in tuned_out[:16]:
        started = time.perf_counter()
        cloud.answer([generation.text])
        cloud_ms.append(1000 * (time.perf_counter() - started))

    burst = [test[i % len(test)] for i in range(args.requests)]
    edge_requests = [EdgeRequest(e.text, e.cell, e.user, None, adapter="completion") for e in burst]
    messages = [json.dumps({"request_id": f"r{i}", "text": e.text, "location": e.cell, "user": e.user, "adapter": "completion"}).encode()
                for i, e in enumerate(burst)]
    serve_sequential(edge, edge_requests[:4])  # warm-up
    seq_lat, seq_tokens, seq_s = serve_sequential(edge, edge_requests)
    bat_lat, bat_tokens, bat_s = serve_batched(edge, messages, args.max_batch)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\n## completion quality, held-out split (unseen districts and phrasings)")
    print(f"{'model':28} {'examples':>8} {'exact match':>12} {'ROUGE-L':>8}")
    for name, report in (("edge GPT-2 + LoRA", tuned), ("edge GPT-2 base (no adapter)", base)):
        print(f"{name:28} {report.examples:>8} {report.exact_match:>12.3f} {report.rouge_l:>8.3f}")
    print(f"tuned completions cut by a limit before end-of-text: {sum(not g.finished for g in tuned_out)}")
    print("\n## edge / cloud split")
    print(f"edge completion latency     {tuned.edge_ms_per_request:8.1f} ms/request (batches of 16)")
    print(f"cloud answer latency        {statistics.median(cloud_ms):8.1f} ms/request (p50, one at a time, 32 new tokens)")
    print(f"bytes edge -> cloud         {tuned.bytes_edge_to_cloud:8.0f} B/request (completed prompt)")
    print(f"bytes cloud-only baseline   {tuned.bytes_cloud_only:8.0f} B/request (prompt + raw location context)")
    print(f"edge model memory           {model_mb(edge.lm):8.1f} MiB ({sum(p.numel() for p in edge.lm.model.parameters()):,} parameters incl. LoRA)")
    print(f"cloud model memory          {model_mb(cloud.lm):8.1f} MiB ({sum(p.numel() for p in cloud.lm.model.parameters()):,} parameters)")
    print(f"\n## serving {args.requests} requests arriving together (same model, same requests)")
    print(f"{'mode':34} {'tokens/s':>9} {'requests/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for name, lat, tokens, secs in (
        ("one at a time (EdgeCompleter)", seq_lat, seq_tokens, seq_s),
        (f"edge service, batches <= {args.max_batch}", bat_lat, bat_tokens, bat_s),
    ):
        print(f"{name:34} {tokens / secs:>9.1f} {args.requests / secs:>10.1f} {percentile(lat, 0.5):>8.0f} {percentile(lat, 0.95):>8.0f}")
    print(f"throughput ratio (service / one at a time): {(bat_tokens / bat_s) / max(seq_tokens / seq_s, 1e-9):.2f}x tokens/s")
    print(f"\nLoRA fine-tuning: {seconds_per_1000:.1f} s per 1,000 examples (rank {args.rank}, {args.threads} threads)")
    print(f"peak RSS: {peak_rss_mb:.0f} MiB")
    return 0 if tuned.rouge_l >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
