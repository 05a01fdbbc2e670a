"""A prompt's service class: the edge model's own output against the keyword rules, same prompts, same run (issues 13, 22).

Scores the service-class probe (:mod:`nm_toolkit.llm.service_class`) of one or more edge models on
labelled requests: ``train`` (the activities and phrasings it was fitted on, fresh
draws), ``held_out`` (activities and phrasings it never saw) and ``ordinary`` (the project's
development set of requests in everyday words, ``tests/data/service_class_ordinary.jsonl``, never
trained on). Per edge model, split and threshold: accuracy of the keyword rules (the baseline), of
the model alone, and of the two combined (the model from ``--threshold`` confidence up, the rules
below it); the share of requests the rules find no class for; the ms per prompt in batches of 32.
Edge models: ``--models DIR`` (what ``nmt llm build -o DIR`` built: DIR/edge with the probe in
DIR/adapters), repeatable to put an old edge next to a new one; or ``--edge BASE``, whose probe is
fitted here first (``--layer``). Writes a PNG of accuracy against threshold.

    PYTHONPATH=. python bench/service_class.py --models /tmp/nb --workdir /tmp/service-class
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nm_toolkit.llm.defaults import BuiltModels
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.service_class import (
    ProbeConfig,
    ServiceClassifier,
    ServiceClassProbe,
    evaluate_classifier,
    fit_service_class_probe,
    labelled_prompts,
    read_labelled,
)

FIGURE = Path(__file__).parent / "figures" / "service_class.png"
ORDINARY = Path(__file__).parent.parent / "tests" / "data" / "service_class_ordinary.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, action="append", default=[], help="models built by `nmt llm build -o DIR` (repeatable)")
    parser.add_argument("--edge", type=Path, help="an edge base checkpoint to train the adapter on here instead")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=ProbeConfig().examples, help="training prompts of a probe fitted here")
    parser.add_argument("--layer", type=int, default=ProbeConfig().layer, help="hidden layer a probe fitted here reads")
    parser.add_argument("--test", type=int, default=700, help="labelled prompts per synthetic split")
    parser.add_argument("--ordinary", type=Path, default=ORDINARY, help="development set of everyday requests (JSON lines)")
    parser.add_argument("--thresholds", default="0,0.5,0.8,0.9,0.95")
    parser.add_argument("--quantize", action="store_true", help="int8 edge base weights (llm.quantize_edge)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.models and args.edge is None:
        parser.error("pass --models DIR (built models) or --edge BASE (train the adapter here)")
    torch.manual_seed(args.seed)
    edges: list[tuple[str, Path, Path]] = [(str(m), BuiltModels.at(m).edge_model, BuiltModels.at(m).adapters_dir) for m in args.models]
    if args.edge is not None:
        started = time.perf_counter()
        config = ProbeConfig(layer=args.layer, examples=args.examples, seed=args.seed)
        probe = fit_service_class_probe(args.edge, args.workdir, config)
        print(f"service-class probe on {args.edge}, layer {probe.layer}: {args.examples} training prompts, {time.perf_counter() - started:.0f} s")
        edges.append((f"{args.edge} (layer {probe.layer})", args.edge, args.workdir))
    splits = {split: labelled_prompts(args.test, split, seed=args.seed + 1) for split in ("train", "held_out")}  # fresh draws
    if args.ordinary.is_file():
        splits["ordinary"] = read_labelled(args.ordinary)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    for name, base, probe_dir in edges:
        lm = AdapterLM.load(base, quantize=args.quantize)
        probe = ServiceClassProbe.load(probe_dir)
        params = sum(p.numel() for p in lm.model.parameters())
        for split, examples in splits.items():
            for threshold in thresholds:
                report = evaluate_classifier(ServiceClassifier(lm, probe, threshold), examples)
                rows.append({"edge": name, "parameters": params, "split": split, "threshold": threshold} | asdict(report))
    if args.json:
        print(json.dumps({"rows": rows}, indent=1))
    else:
        print("| edge | split | n | threshold | keywords (baseline) | model alone | combined | rules find no class | model decided | ms/prompt |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['edge']} ({r['parameters'] / 1e6:.1f} M) | {r['split']} | {r['examples']} | {r['threshold']:.2f} | {r['keywords']:.3f} | "
                f"{r['model']:.3f} | {r['combined']:.3f} | {r['keywords_unclassified']:.2f} | {r['model_decided']:.2f} | {r['ms_per_prompt']:.1f} |"
            )
    plot(rows, FIGURE)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"train": "-", "held_out": "--", "ordinary": ":"}
    for edge in dict.fromkeys(r["edge"] for r in rows):
        for split, style in styles.items():
            mine = [r for r in rows if r["split"] == split and r["edge"] == edge]
            if mine:
                ax.plot([r["threshold"] for r in mine], [r["combined"] for r in mine], style + "o", label=f"{Path(edge).name} + rules ({split})")
    for split, style in styles.items():
        mine = [r for r in rows if r["split"] == split]
        if mine:
            ax.axhline(mine[0]["keywords"], linestyle=style, color="grey", label=f"keyword rules ({split})")
    ax.set_xlabel("confidence from which the model's class stands")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Service class of a prompt")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
