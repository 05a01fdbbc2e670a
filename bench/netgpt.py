"""NetGPT end to end on the city question-answering task, against cloud-only baselines (issues 12, 22).

Held-out districts and phrasings of :func:`nm_toolkit.llm.city_qa.build_city_qa_dataset` ("nearest"
and "open" requests, two tenants), plus held-out requests whose user's profile changes the place
(:func:`~nm_toolkit.llm.city_qa.personalised`: a vegetarian's restaurant, a wheelchair user's
step-free pharmacy, a cheap supermarket on a tight budget). The models are the toolkit's defaults
(:data:`nm_toolkit.llm.defaults.SIZES`): SmolLM2-135M-Instruct, pretrained, at the edge (LoRA
completion adapter, grounded ranked choice) and in the cloud, with two sets of cloud adapters, one
per tenant each, trained for the same number of steps on the questions each deployment is asked:
NetGPT's on the completed prompts, a cloud-only deployment's on the words alone and the words with
the raw location context (``city_qa.NETGPT_FORMS`` / ``CLOUD_ONLY_FORMS``). Rows:

(a) edge alone: :func:`~nm_toolkit.llm.city_qa.edge_answer` of the grounded choice;
(b) cloud alone, the user's words and the time of day only (no location);
(c) cloud alone with the raw location context (bytes: ``cloud_only_payload``, the JSON it ships):
    every place of the cell with its features and the user's profile, the cloud finds the place;
(d) NetGPT with routing: :func:`nm_toolkit.llm.router.route` with the edge's confidence and
    ``chosen.kind in LOCAL_KINDS``; the routed requests' completed prompts answered by the cloud;
plus NetGPT with everything sent to the cloud, and with the wrong tenant's adapter (the per-tenant
adapters' worth). Quality: ``answer_score`` (share of the reference's facts stated) and ROUGE-L
against the reference answers; place: the answer names the place to suggest; personalised place:
the same on the requests whose profile changes the place. Latency per request: the measured
compute of the batch it ran in (batches of ``--batch``), plus for cloud paths the stated RTT and
the transfer at the stated bandwidth; edge and cloud compute per request are printed side by side.
Denied: requests whose cloud-bound text fails ``privacy.check_egress``. The routing curve (quality
against the share sent to the cloud, sweeping ``confidence_threshold``) goes to
``WORKDIR/netgpt_routing.png``. Models are cached in the workdir (re-runs only evaluate).

    PYTHONPATH=. python bench/netgpt.py --workdir /tmp/netgpt --models /tmp/nb
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nm_toolkit.llm.city_qa import (
    CLOUD_ONLY_FORMS,
    LOCAL_KINDS,
    TENANTS,
    CityQAExample,
    answer_score,
    context_question,
    edge_answer,
    example_context,
    example_reference,
    expected_place,
    names_place,
    personalised,
    personalised_examples,
    short_question,
    train_cloud_adapters,
)
from nm_toolkit.llm.completion_data import cloud_only_payload
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.defaults import EDGE_ADAPTER, SIZES, BuiltModels, build_netgpt, city_task
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.grounding import GroundedChoice
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.metrics import rouge_l
from nm_toolkit.llm.netgpt import CloudResponder, EdgeCompleter, EdgeRequest, _at
from nm_toolkit.llm.privacy import check_egress
from nm_toolkit.llm.router import LinkEstimate, RouterConfig, route

CLOUD_ONLY_ADAPTERS = "cloud-only-adapters"  # next to the cloud's NetGPT adapters: the baselines'


@dataclass(frozen=True)
class Row:
    method: str
    quality: float  # mean answer_score
    rouge_l: float
    place: float
    personal: float  # place correct on the requests whose profile changes the place
    cloud_share: float
    bytes_per_request: float
    p50_ms: float
    p95_ms: float
    denied: int


def ensure_models(work: Path, models: Path | None, train: Sequence[CityQAExample], store: ContextStore) -> BuiltModels:
    """The default NetGPT models (``--models``, else built in ``work``) and the cloud-only
    deployment's adapters on the same cloud base, trained for as many steps."""
    size = SIZES["default"]
    built = BuiltModels.at(models) if models is not None else build_netgpt(work, size, on_stage=lambda stage: print(f"building: {stage}", flush=True))
    started = time.perf_counter()
    cards = train_cloud_adapters(built.cloud_model, AdapterRegistry(work / CLOUD_ONLY_ADAPTERS), train[: size.cloud_examples], store,
                                 size.cloud_lora, forms=CLOUD_ONLY_FORMS)  # fmt: skip
    for card in cards:
        print(f"cloud-only adapter {card.name} ({card.config.get('forms')}): {card.train_examples} pairs, trained in {card.train_seconds:.0f} s", flush=True)
    print(f"cloud-only adapters ready in {time.perf_counter() - started:.0f} s", flush=True)
    return built


def batched(items: Sequence, size: int, work: Callable[[Sequence], list]) -> tuple[list, list[float]]:
    """``work`` over batches of ``items``; results in order and each item's latency (its batch's seconds)."""
    out: list = []
    seconds: list[float] = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        began = time.perf_counter()
        out += work(chunk)
        seconds += [time.perf_counter() - began] * len(chunk)
    return out, seconds


def percentile(values: Sequence[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="models and adapters are cached here")
    parser.add_argument("--models", type=Path, help="NetGPT models `nmt llm build -o DIR` built (default: build them in the workdir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=160, help="held-out requests")
    parser.add_argument("--personalised", type=int, default=40, help="more held-out requests whose profile changes the place")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=RouterConfig().confidence_threshold)
    parser.add_argument("--quantize-edge", action="store_true", help="serve the edge model int8 (llm.quantize_edge)")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="stated edge-cloud round trip")
    parser.add_argument("--bandwidth-mbps", type=float, default=10.0, help="stated edge-cloud bandwidth")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only-train", action="store_true", help="build and cache the models, then stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work: Path = args.workdir
    print(f"command: {' '.join(sys.argv)}", flush=True)

    size = SIZES["default"]
    store, train, held_out = city_task(size.seed, max(size.edge_examples, size.cloud_examples), args.test)
    built = ensure_models(work, args.models, train, store)
    if args.only_train:
        return 0
    test = held_out + personalised_examples(store, args.personalised, seed=size.seed + 7)
    is_personal = [personalised(store, e) for e in test]

    edge_lm = AdapterLM.load(built.edge_model, AdapterRegistry(built.adapters_dir), [EDGE_ADAPTER], quantize=args.quantize_edge)
    completer = EdgeCompleter(edge_lm, store)
    limits = GenerationLimits(max_new_tokens=48, timeout_s=600)
    cloud = CloudResponder(AdapterLM.load(built.cloud_model, AdapterRegistry(built.cloud_adapters_dir), list(TENANTS)), limits)
    cloud_only = CloudResponder(AdapterLM.load(built.cloud_model, AdapterRegistry(work / CLOUD_ONLY_ADAPTERS), list(TENANTS)), limits)
    tenants = [e.tenant for e in test]
    contexts = [example_context(store, e) for e in test]
    references = [example_reference(store, e) for e in test]
    places = [expected_place(store, e) for e in test]
    link = LinkEstimate(args.rtt_ms / 1000, args.bandwidth_mbps * 1e6, 0, RouterConfig().cloud_service_s, 0)

    def edge_choose(chunk: Sequence[CityQAExample]) -> list[GroundedChoice]:
        return completer.choose([completer.prepare(EdgeRequest(e.text, e.cell, e.user, _at(e.time_of_day), adapter=EDGE_ADAPTER)) for e in chunk])

    def ask(questions: Sequence[str], who: Sequence[str], responder: CloudResponder = cloud) -> tuple[list[str], list[float]]:
        pairs = list(zip(questions, who, strict=True))
        answers, seconds = batched(pairs, args.batch, lambda chunk: [g.text for g in responder.respond([q for q, _ in chunk], [t for _, t in chunk])])
        return answers, seconds

    def link_s(sent: Sequence[int]) -> list[float]:
        return [args.rtt_ms / 1000 + 8 * b / (args.bandwidth_mbps * 1e6) for b in sent]

    def row(method: str, answers: Sequence[str], to_cloud: Sequence[bool], sent: Sequence[int], latency_s: Sequence[float], denied: int) -> Row:
        n = len(test)
        ms = [1000 * s for s in latency_s]
        named = [names_place(a, p) for a, p in zip(answers, places, strict=True)]
        return Row(method, sum(answer_score(a, r) for a, r in zip(answers, references, strict=True)) / n,
                   sum(rouge_l(a, r.text) for a, r in zip(answers, references, strict=True)) / n,
                   sum(named) / n, sum(k for k, p in zip(named, is_personal, strict=True) if p) / max(1, sum(is_personal)),
                   sum(to_cloud) / n, sum(sent) / n, percentile(ms, 50), percentile(ms, 95), denied)  # fmt: skip

    def leaks(texts: Sequence[str | bytes], indices: Sequence[int]) -> int:
        return sum(bool(check_egress({"request_id": "r", "text": t if isinstance(t, str) else t.decode()}, contexts[i])) for t, i in zip(texts, indices, strict=True))

    choices, edge_s = batched(test, args.batch, edge_choose)
    chosen = [c.chosen for c in choices]
    print(f"edge choice: category {sum(c.category == e.category for c, e in zip(chosen, test, strict=True)) / len(test):.3f}, "
          f"kind {sum(c.kind == e.kind for c, e in zip(chosen, test, strict=True)) / len(test):.3f}, "
          f"both {sum((c.category, c.kind) == (e.category, e.kind) for c, e in zip(chosen, test, strict=True)) / len(test):.3f}, "
          f"mean confidence {sum(c.confidence for c in choices) / len(choices):.2f}", flush=True)  # fmt: skip
    everyone = list(range(len(test)))
    rows = [row("(a) edge alone", [edge_answer(c, t) for c, t in zip(chosen, tenants, strict=True)], [False] * len(test), [0] * len(test), edge_s, 0)]

    shorts = [short_question(e.text, e.time_of_day) for e in test]
    answers, seconds = ask(shorts, tenants, cloud_only)
    sent = [len(q.encode()) for q in shorts]
    rows.append(row("(b) cloud alone, words only", answers, [True] * len(test), sent,
                    [s + l for s, l in zip(seconds, link_s(sent), strict=True)], leaks(shorts, everyone)))  # fmt: skip
    print(f"  {rows[-1].method} done", flush=True)

    payloads = [cloud_only_payload(e.text, c) for e, c in zip(test, contexts, strict=True)]
    answers, seconds = ask([context_question(e.text, c) for e, c in zip(test, contexts, strict=True)], tenants, cloud_only)
    sent = [len(p) for p in payloads]
    rows.append(row("(c) cloud alone, raw location context", answers, [True] * len(test), sent,
                    [s + l for s, l in zip(seconds, link_s(sent), strict=True)], leaks(payloads, everyone)))  # fmt: skip
    print(f"  {rows[-1].method} done", flush=True)

    completed = [c.text for c in chosen]
    all_cloud, all_seconds = ask(completed, tenants)
    sent = [len(t.encode()) for t in completed]
    all_latency = [e + s + l for e, s, l in zip(edge_s, all_seconds, link_s(sent), strict=True)]
    def routed(threshold: float) -> list[bool]:
        config = RouterConfig(confidence_threshold=threshold)
        return [route(c.confidence, c.chosen.kind in LOCAL_KINDS, len(c.chosen.text.encode()), link, config).path == "cloud" for c in choices]

    to_cloud = routed(args.threshold)
    picked = [i for i, up in enumerate(to_cloud) if up]
    routed_answers, routed_seconds = ask([completed[i] for i in picked], [tenants[i] for i in picked])
    answers = [edge_answer(c, t) for c, t in zip(chosen, tenants, strict=True)]
    latency = list(edge_s)
    for i, answer, seconds_i in zip(picked, routed_answers, routed_seconds, strict=True):
        answers[i] = answer
        latency[i] += seconds_i + link_s([sent[i]])[0]
    rows.append(row(f"(d) NetGPT, routed (threshold {args.threshold:g})", answers, to_cloud,
                    [sent[i] if up else 0 for i, up in enumerate(to_cloud)], latency, leaks([completed[i] for i in picked], picked)))  # fmt: skip
    rows.append(row("NetGPT, every request to the cloud", all_cloud, [True] * len(test), sent, all_latency, leaks(completed, everyone)))
    wrong = [TENANTS[(TENANTS.index(t) + 1) % len(TENANTS)] for t in tenants]
    wrong_answers, _ = ask(completed, wrong)
    rows.append(row("NetGPT to the cloud, the other tenant's adapter", wrong_answers, [True] * len(test), sent, all_latency, leaks(completed, everyone)))

    print(f"\n## city question answering, held-out districts and phrasings ({len(test)} requests, "
          f"{sum(e.kind == 'open' for e in test)} 'open', {sum(is_personal)} personalised; {args.threads} thread(s), batches of {args.batch}, "
          f"edge {'int8' if args.quantize_edge else 'fp32'}, stated RTT {args.rtt_ms:g} ms, {args.bandwidth_mbps:g} Mbit/s)")  # fmt: skip
    print(f"compute per batch of {args.batch} (per request): edge, grounded choice {1000 * sum(edge_s) / len(test):.0f} ms "
          f"({1000 * sum(edge_s) / len(test) / args.batch:.0f}); cloud, answers to completed prompts {1000 * sum(all_seconds) / len(test):.0f} ms "
          f"({1000 * sum(all_seconds) / len(test) / args.batch:.0f})")  # fmt: skip
    print("| method | answer score | ROUGE-L | place | personalised place | to cloud | bytes edge->cloud | p50 ms | p95 ms | denied |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.method} | {r.quality:.3f} | {r.rouge_l:.3f} | {r.place:.3f} | {r.personal:.3f} | {r.cloud_share:.2f} | {r.bytes_per_request:.0f} | "
              f"{r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.denied} |")  # fmt: skip

    curve = []
    for threshold in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0):
        up = routed(threshold)
        mixed = [a if u else edge_answer(c, t) for a, u, c, t in zip(all_cloud, up, chosen, tenants, strict=True)]
        curve.append((threshold, sum(up) / len(up), sum(answer_score(a, r) for a, r in zip(mixed, references, strict=True)) / len(up)))
    print("\nrouting curve (cloud answers from the every-request run): threshold, share to cloud, answer score")
    for threshold, share, quality in curve:
        print(f"  {threshold:g}: {share:.2f} -> {quality:.3f}")
    plot = work / "netgpt_routing.png"
    plot_curve(curve, rows, plot)
    print(f"routing curve: {plot}")

    ours, baseline = rows[3], rows[2]
    goals = {
        "place correct >= 0.97 (NetGPT)": ours.place >= 0.97,
        "personalised place correct >= 0.90 (NetGPT)": ours.personal >= 0.90,
        f"NetGPT quality >= 0.98 x (c) ({ours.quality:.3f} vs {0.98 * baseline.quality:.3f})": ours.quality >= 0.98 * baseline.quality,
        "NetGPT sends <= 50% to the cloud": ours.cloud_share <= 0.5,
        f"NetGPT puts >= 20x fewer bytes on the link than (c) ({baseline.bytes_per_request / max(1.0, ours.bytes_per_request):.1f}x)":
            baseline.bytes_per_request >= 20 * ours.bytes_per_request,
        "no denied field leaves the edge (NetGPT)": ours.denied == 0,
    }  # fmt: skip
    for goal, met in goals.items():
        print(f"{'met' if met else 'MISSED'}: {goal}")
    return 0 if all(goals.values()) else 1


def plot_curve(curve: Sequence[tuple[float, float, float]], rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s for _, s, _ in curve], [q for _, _, q in curve], marker="o", label="NetGPT, sweeping confidence_threshold")
    labels: dict[tuple[float, float], list[float]] = {}
    for threshold, share, quality in curve:  # thresholds that route alike share one point and one label
        labels.setdefault((share, quality), []).append(threshold)
    for (share, quality), thresholds in labels.items():
        text = f"{thresholds[0]:g}" if len(thresholds) == 1 else f"{thresholds[0]:g}-{thresholds[-1]:g}"
        ax.annotate(text, (share, quality), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for r, marker in zip(rows[:3], ("s", "v", "^"), strict=True):
        ax.scatter([r.cloud_share], [r.quality], marker=marker, label=r.method, zorder=3)
    ax.axhline(0.98 * rows[2].quality, linestyle=":", color="grey", label="0.98 x (c)")
    ax.set_xlabel("share of requests sent to the cloud")
    ax.set_ylabel("answer score (share of reference facts)")
    ax.set_title("City QA: answer quality vs cloud share (held-out)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
