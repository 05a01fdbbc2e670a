"""A prompt's service class: the edge model's own output against the keyword rules, same prompts, same run (issue 13).

Trains the ``service_class`` adapter (:mod:`nm_toolkit.llm.service_class`) on an edge base (the one
``nmt llm build`` trained, ``--edge``), then scores on labelled requests of two splits: ``train``
(the activities and phrasings it was fitted on, fresh draws) and ``held_out`` (activities and
phrasings it never saw). Per split: accuracy of the keyword rules (the baseline, today's
behaviour), of the model alone, and of the two combined (the model from ``--threshold`` confidence
up, the rules below it) at each threshold; the share of requests the rules find no class for; and
the ms per prompt of the model in batches of 32. Writes a PNG of accuracy against threshold.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/service_class.py --edge /tmp/netgpt_c1000/edge --workdir /tmp/service-class
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nm_toolkit.llm.defaults import SIZES
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.service_class import SERVICE_CLASS_ADAPTER, ServiceClassifier, evaluate_classifier, labelled_prompts, train_service_class_adapter

FIGURE = Path(__file__).parent / "figures" / "service_class.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edge", type=Path, required=True, help="edge base checkpoint (nmt llm build -o DIR puts it at DIR/edge)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=SIZES["default"].service_class_examples)
    parser.add_argument("--test", type=int, default=700, help="labelled prompts per split")
    parser.add_argument("--thresholds", default="0,0.5,0.8,0.9,0.95")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    registry = AdapterRegistry(args.workdir / "adapters")
    started = time.perf_counter()
    card = train_service_class_adapter(args.edge, registry, SIZES["default"].service_class_lora, args.examples, args.seed)
    train_s = time.perf_counter() - started
    lm = AdapterLM.load(args.edge, registry, [SERVICE_CLASS_ADAPTER])
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    for split in ("train", "held_out"):
        examples = labelled_prompts(args.test, split, seed=args.seed + 1)  # fresh draws, not the fitted ones
        for threshold in thresholds:
            report = evaluate_classifier(ServiceClassifier(lm, min_confidence=threshold), examples)
            rows.append({"split": split, "threshold": threshold} | asdict(report))
    if args.json:
        print(json.dumps({"train_seconds": round(train_s, 1), "train_examples": card.train_examples, "rows": rows}, indent=1))
    else:
        print(f"service_class adapter: {card.train_examples} training prompts, {train_s:.0f} s")
        print("| split | threshold | keywords (baseline) | model alone | combined | x baseline | rules find no class | model decided | ms/prompt |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            ratio = r["combined"] / r["keywords"] if r["keywords"] else float("nan")
            print(
                f"| {r['split']} | {r['threshold']:.2f} | {r['keywords']:.3f} | {r['model']:.3f} | {r['combined']:.3f} | {ratio:.2f} | "
                f"{r['keywords_unclassified']:.2f} | {r['model_decided']:.2f} | {r['ms_per_prompt']:.1f} |"
            )
    plot(rows, FIGURE)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("held_out", "--")):
        mine = [r for r in rows if r["split"] == split]
        ax.plot([r["threshold"] for r in mine], [r["combined"] for r in mine], style + "o", label=f"edge model + rules ({split})")
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
