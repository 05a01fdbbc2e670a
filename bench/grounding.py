"""Free generation vs grounded ranked choice at the edge, on held-out districts and phrasings (issue 12).

One freshly trained edge model and one LoRA adapter (trained on the privacy-respecting targets of
``comprehensive_prompt``), two ways to complete: (a) free generation, as before; (b) grounded
ranked choice (``nm_toolkit.llm.grounding``): the nearest place of every category comes from the
context store, the model only picks the candidate. Per way and split: place correctness (the
completion names the nearest place of the category the request asked for), distance correctness,
category accuracy, ROUGE-L against the targets, ms per request (batches of 16), and for grounded
rows the mean confidence and the accuracy of the requests whose confidence is under 0.5.

The held-out pairs are drawn from the held-out districts with the held-out phrasings; the first
``--test`` are the report split (the same pairs bench/llm.py scores), the next ``--dev`` the split
the grounded scoring variants are chosen on. The variant chosen on dev is marked ``*``. ``city7`` (``--other-city``) is another
city's held-out pairs: cells, district layout and place names none of fine-tuning saw. Last, a few
requests that ask for no place category, with the confidence a router would see.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/grounding.py --intents /work/shared/data/nile_intents_alpha.json --workdir /tmp/grounding
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nm_toolkit.llm.completion_data import CompletionExample, build_completion_dataset, nearest_by_category
from nm_toolkit.llm.context import ContextStore, synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import AdapterLM, Generation, GenerationLimits
from nm_toolkit.llm.grounding import GroundedChooser, GroundedGeneration
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.metrics import rouge_l
from nm_toolkit.llm.netgpt import EdgeCompleter, EdgeRequest, _at
from nm_toolkit.llm.offline import load_causal_lm

# render_prompt's wording, one named group per field
TEMPLATE = re.compile(
    r"Recommend a (?P<category>.+?) near me in (?P<district>.+?) this (?P<time_of_day>\w+)\. "
    r"The nearest (?P<category_again>.+?) is (?P<place>.+?), (?P<distance>\d+) m away, rated (?P<rating>[\d.]+)\.$"
)
ADAPTER = "completion"


@dataclass(frozen=True)
class Row:
    split: str
    method: str
    n: int
    place: float
    distance: float
    category: float
    rouge_l: float
    ms: float
    confidence: float | None = None
    low_conf_share: float | None = None  # share of requests under 0.5 confidence
    low_conf_acc: float | None = None  # category accuracy among them


def score(examples: Sequence[CompletionExample], outputs: Sequence[Generation], store: ContextStore, ms: float, split: str, method: str) -> Row:
    place = distance = category = 0
    for example, output in zip(examples, outputs, strict=True):
        want = nearest_by_category(store.cells[example.cell].pois)[example.category]
        got = TEMPLATE.match(output.text)
        if got is None:
            continue
        place += got["place"] == want.name
        distance += got["distance"] == str(want.distance_m)
        category += got["category"] == example.category
    n = len(examples)
    grounded = [o for o in outputs if isinstance(o, GroundedGeneration)]
    conf = low_share = low_acc = None
    if grounded:
        conf = sum(o.choice.confidence for o in grounded) / len(grounded)
        low = [(o, e) for o, e in zip(outputs, examples, strict=True) if isinstance(o, GroundedGeneration) and o.choice.confidence < 0.5]
        low_share = len(low) / n
        low_acc = sum(o.choice.chosen.category == e.category for o, e in low) / len(low) if low else None
    return Row(split, method, n, place / n, distance / n, category / n,
               sum(rouge_l(o.text, e.target) for o, e in zip(outputs, examples, strict=True)) / n, ms, conf, low_share, low_acc)  # fmt: skip


def run(completer: EdgeCompleter, examples: Sequence[CompletionExample], batch: int) -> tuple[list[Generation], float]:
    outputs: list[Generation] = []
    started = time.perf_counter()
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        prepared = [completer.prepare(EdgeRequest(e.text, e.cell, e.user, _at(e.time_of_day), adapter=ADAPTER)) for e in chunk]
        outputs += completer.complete(prepared)
    return outputs, 1000 * (time.perf_counter() - started) / max(1, len(examples))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=Path, help="Nile intents JSON added to the pre-training corpus")
    parser.add_argument("--workdir", type=Path, help="edge model and adapter live here (built when missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edge-preset", default="edge")
    parser.add_argument("--edge-steps", type=int, default=1000)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=100, help="report split: the first N held-out pairs")
    parser.add_argument("--dev", type=int, default=100, help="choice split: the next N held-out pairs")
    parser.add_argument("--epochs", type=float, default=2.5)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--other-city", type=int, default=7, help="also score the held-out pairs of a city built with this seed, "
                        "none of whose cells or places fine-tuning saw (-1: skip)")
    parser.add_argument("--show-errors", type=int, default=12, help="print up to N mis-chosen categories per split")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nmt-bench-grounding-"))
    edge_dir, registry = work / "edge", AdapterRegistry(work / "adapters")
    print(f"command: {' '.join(sys.argv)}", flush=True)

    if not (edge_dir / "config.json").is_file():
        started = time.perf_counter()
        model, tokenizer, losses, facts = initialise_model(InitConfig(
            arch="gpt2", preset=args.edge_preset, steps=args.edge_steps, seed=args.seed, corpus=CorpusConfig(), intents_file=args.intents,
        ))  # fmt: skip
        save_initialised(edge_dir, model, tokenizer, losses, facts)
        print(f"edge model built: {facts['parameters']:,} parameters, {time.perf_counter() - started:.0f} s", flush=True)
    card = json.loads((edge_dir / "nmt_card.json").read_text())
    print(f"edge model: {card['preset']} {card['arch']}, {card['parameters']:,} parameters, "
          f"{card['init_config']['steps']} steps, final loss {card['final_loss']}", flush=True)  # fmt: skip

    store = synthetic_city(seed=args.seed + 1)
    train, held = build_completion_dataset(store, args.train, args.test + args.dev, seed=args.seed + 1)
    test, dev = held[: args.test], held[args.test :]
    config = LoraTrainConfig(rank=args.rank, alpha=2 * args.rank, epochs=args.epochs, learning_rate=args.lr, seed=args.seed)
    fingerprint = {"lora": asdict(config), "train": len(train), "first_target": train[0].target}
    existing = registry.path(ADAPTER) / "nmt_adapter.json"
    if not existing.is_file() or json.loads(existing.read_text()).get("config") != json.loads(json.dumps(fingerprint)):
        model, tokenizer = load_causal_lm(edge_dir)
        tuner = LoraFineTuner(config).fit(model, tokenizer, [(e.input, " " + e.target) for e in train], ADAPTER)
        registry.save(tuner.model_, AdapterCard(ADAPTER, "prompt_completion", str(edge_dir), train_examples=len(train),
                                                train_seconds=tuner.seconds_, config=fingerprint), tuner.losses_)  # fmt: skip
        print(f"LoRA: {len(train)} pairs x {args.epochs} epochs in {tuner.seconds_:.0f} s, final loss {tuner.losses_[-1]:.3f}", flush=True)
    else:
        print(f"LoRA: reusing {registry.path(ADAPTER)} (same config and targets)", flush=True)

    lm = AdapterLM.load(edge_dir, registry, [ADAPTER])
    limits = GenerationLimits(max_new_tokens=72, timeout_s=600)
    variants = {
        "grounded, category span": GroundedChooser(lm, "category"),
        "grounded, mean token log-prob": GroundedChooser(lm, "mean"),
        "grounded, sum log-prob": GroundedChooser(lm, "sum"),
        "grounded, category span + request words": GroundedChooser(lm, "category", lexical_weight=2.0),
    }
    rows: list[Row] = []
    mistakes: dict[tuple[str, str], list[str]] = {}
    splits = [("dev", dev, store), ("test", test, store)]
    if args.other_city >= 0:
        other = synthetic_city(seed=args.other_city)
        splits.append((f"city{args.other_city}", build_completion_dataset(other, 0, args.test, seed=args.other_city)[1], other))
    for split, examples, city in splits:
        if not examples:
            continue
        free = EdgeCompleter(lm, city, limits, grounded=False)
        outputs, ms = run(free, examples, args.batch)
        rows.append(score(examples, outputs, city, ms, split, "free generation"))
        print(f"  {split} free generation done ({ms:.0f} ms/request)", flush=True)
        for name, chooser in variants.items():
            outputs, ms = run(EdgeCompleter(lm, city, limits, chooser=chooser), examples, args.batch)
            rows.append(score(examples, outputs, city, ms, split, name))
            mistakes[(split, name)] = [
                f"{e.text!r}: wanted {e.category}, chose {o.choice.chosen.category} (confidence {o.choice.confidence:.2f})"
                for e, o in zip(examples, outputs, strict=True)
                if isinstance(o, GroundedGeneration) and o.choice.chosen.category != e.category
            ]

    print("\nrequests for no place category (what a router must catch), grounded, category span, cell of the first test pair:")
    probe = EdgeCompleter(lm, splits[0][2], limits)
    for text in ("what's the weather like", "book me a taxi to the airport", "hello", "how late is it open?", "coffee near me"):
        choice = probe.choose([probe.prepare(EdgeRequest(text, test[0].cell, test[0].user, _at("evening"), adapter=ADAPTER))])[0]
        print(f"  {text!r}: {choice.chosen.category}, confidence {choice.confidence:.2f}, margin {choice.margin:.2f}")

    chosen = max((r for r in rows if r.split == "dev" and r.method.startswith("grounded")), key=lambda r: (r.category, r.rouge_l), default=None)
    print(f"\n## free generation vs grounded ranked choice, held-out districts and phrasings ({args.threads} thread(s), batches of {args.batch})")
    print(f"{'split':5} {'method':42} {'n':>4} {'place':>6} {'dist':>6} {'categ':>6} {'ROUGE-L':>7} {'ms/req':>7} {'conf':>6} {'<0.5':>6} {'acc<0.5':>7}")
    for r in rows:
        mark = "*" if chosen is not None and r.method == chosen.method else " "
        print(f"{r.split:5} {r.method + mark:42} {r.n:>4} {r.place:>6.3f} {r.distance:>6.3f} {r.category:>6.3f} {r.rouge_l:>7.3f} {r.ms:>7.1f} "
              f"{fmt(r.confidence, 2):>6} {fmt(r.low_conf_share, 2):>6} {fmt(r.low_conf_acc, 2):>7}")  # fmt: skip
    for (split, name), wrong in mistakes.items():
        if wrong:
            nouns = Counter(w.split(":")[0] for w in wrong)
            print(f"\n{split}, {name}: {len(wrong)} mis-chosen categories; by request: {dict(nouns.most_common(8))}")
            for line in wrong[: args.show_errors]:
                print(f"  {line}")
    best_test = next((r for r in rows if r.split == "test" and chosen is not None and r.method == chosen.method), None)
    return 0 if best_test is not None and best_test.place >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
