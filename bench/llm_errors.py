"""Where the edge model's completions go wrong: held-out ROUGE-L plus errors per field of the template.

Reads a work directory that ``bench/llm.py --workdir DIR`` filled (``edge/`` and ``adapters/``),
completes the first ``--test`` held-out pairs of the same split, and counts, field by field
(category, district, time of day, place name, distance, rating), how many completions got that
field wrong; completions that do not follow the template at all are counted apart. Free generation
unless ``--grounded`` (ranked choice among grounded candidates, ``nm_toolkit.llm.grounding``).

    PYTHONPATH=. python bench/llm_errors.py --workdir /tmp/benchwork2 --test 50
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import torch

from nm_toolkit.llm.completion_data import build_completion_dataset
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.netgpt import EdgeCompleter, evaluate_completion

# comprehensive_prompt's wording, one named group per value the completion must copy or infer
TEMPLATE = re.compile(
    r"Recommend a (?P<category>.+?) near me in (?P<district>.+?) this (?P<time_of_day>\w+)\. "
    r"The nearest (?P<category_again>.+?) is (?P<place>.+?), (?P<distance>\d+) m away, rated (?P<rating>[\d.]+)\.$"
)


def field_errors(outputs: list[str], references: list[str]) -> Counter[str]:
    """Per field, how many outputs differ from their reference; ``off-template`` for unparsable ones."""
    errors: Counter[str] = Counter()
    for output, reference in zip(outputs, references, strict=True):
        want, got = TEMPLATE.match(reference), TEMPLATE.match(output)
        if want is None or got is None:
            errors["off-template"] += 1
            continue
        errors.update(k for k, v in got.groupdict().items() if v != want[k])
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a bench/llm.py work directory")
    parser.add_argument("--adapter", default="completion")
    parser.add_argument("--seed", type=int, default=0, help="the seed bench/llm.py ran with")
    parser.add_argument("--train", type=int, default=1500, help="the --train bench/llm.py ran with (fixes the split)")
    parser.add_argument("--test", type=int, default=100, help="first N held-out pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grounded", action="store_true", help="ranked choice among grounded candidates instead of free generation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = synthetic_city(seed=args.seed + 1)
    _, test = build_completion_dataset(store, args.train, 100, seed=args.seed + 1)
    test = test[: args.test]
    lm = AdapterLM.load(args.workdir / "edge", AdapterRegistry(args.workdir / "adapters"), [args.adapter])
    completer = EdgeCompleter(lm, store, GenerationLimits(max_new_tokens=72, timeout_s=600), grounded=args.grounded)
    report, outputs = evaluate_completion(completer, test, args.adapter)
    print(f"held-out pairs {report.examples}, ROUGE-L {report.rouge_l:.3f}, exact match {report.exact_match:.3f}, "
          f"cut by a limit {sum(not o.finished for o in outputs)}")
    errors = field_errors([o.text for o in outputs], [e.target for e in test])
    print("wrong fields: " + ", ".join(f"{name} {count}" for name, count in errors.most_common()))


if __name__ == "__main__":
    main()
