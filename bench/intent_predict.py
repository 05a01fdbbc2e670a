"""Intent extraction cost: fit seconds and predict milliseconds per intent of this tree's extractor,
next to a baseline tree (a git revision) measured in the same run.

    python bench/intent_predict.py [--nile ../shared/data/nile_intents_alpha.json] [--texts FILE] [--baseline REV] [--method vote]

Each tree runs in its own process (``PYTHONPATH`` set to that tree, the baseline unpacked with
``git archive``): it fits ``--method`` on every intent of the file and saves it, then the timing
rounds alternate between the trees so load on the shared machine hits both alike. A round loads
the saved extractor and predicts every text of ``--texts`` (default: the fitted file; the policy
prose of ``tests/data/intent_policy_prose_dev.json`` for issue 25) ``--passes`` times; its figure is
the best pass, the reported one the median round. Also says on how many texts the two trees'
predictions differ (0 for a change that only makes prediction faster). The goals: under 5 ms per
intent, fit under 2 minutes (issue 14, short commands); under 50 ms per sentence of policy prose,
fit under 5 minutes (issue 25).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NILE = Path("../shared/data/nile_intents_alpha.json")  # relative to the repository root, as in the issue


def fit_worker(nile: Path, method: str, directory: Path) -> dict[str, object]:
    """Fit ``method`` on the whole file and save it (runs inside the tree under test)."""
    from intent.data import load_intents
    from intent.methods import factory

    intents = load_intents(nile)
    started = time.perf_counter()
    extractor = factory(method)().fit(intents)
    seconds = time.perf_counter() - started
    extractor.save_pretrained(directory)  # type: ignore[attr-defined]
    return {"fit_seconds": seconds}


def time_worker(texts_file: Path, directory: Path, passes: int) -> dict[str, object]:
    """Best-of-``passes`` predict time per intent of the saved extractor, and its predictions."""
    from intent.data import load_intents
    from intent.methods import load

    texts = [item.text for item in load_intents(texts_file)]
    extractor = load(directory)
    best, predicted = float("inf"), []
    for _ in range(passes):
        started = time.perf_counter()
        predicted = extractor.predict_spans(texts)
        best = min(best, time.perf_counter() - started)
    spans = [[[s.type, s.start, s.end] for s in spans] for spans in predicted]
    return {"ms_per_intent": 1000 * best / len(texts), "spans": spans}


def run_worker(tree: Path, nile: Path, *args: str) -> dict[str, object]:
    """One worker process on ``tree``'s code; refuses a result computed with another tree's."""
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, __file__, "--nile", str(nile.resolve()), "--worker", *args]
    result = json.loads(subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    if not Path(result.pop("code")).is_relative_to(tree):
        raise SystemExit(f"the worker for {tree} imported another tree's intent package")
    return result  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nile", type=Path, default=NILE, help="labelled intents to fit on and predict")
    parser.add_argument("--baseline", default="HEAD", help="git revision of the baseline tree")
    parser.add_argument("--texts", type=Path, help="labelled intents whose texts are timed (default: --nile)")
    parser.add_argument("--method", default="vote")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        import intent

        result = fit_worker(args.nile, rest[0], Path(rest[1])) if kind == "fit" else time_worker(Path(rest[2]), Path(rest[0]), int(rest[1]))
        print(json.dumps(result | {"code": intent.__file__}))
        return

    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "baseline"
        base_tree.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "intent", "nm_toolkit"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
        trees = {f"baseline ({args.baseline})": base_tree, "this tree": ROOT}
        fitted = {name: run_worker(tree, args.nile, "fit", args.method, str(Path(tmp) / f"model{k}")) for k, (name, tree) in enumerate(trees.items())}
        rounds: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for k, (name, tree) in enumerate(trees.items()):
                rounds[name].append(run_worker(tree, args.nile, "time", str(Path(tmp) / f"model{k}"), str(args.passes), str((args.texts or args.nile).resolve())))
    (base_name, base), (_, this) = rounds.items()
    differ = sum(a != b for a, b in zip(base[0]["spans"], this[0]["spans"], strict=True))  # type: ignore[call-overload]
    timed = (args.texts or args.nile).name
    print(f"`{args.method}` fitted on all intents of {args.nile.name} per tree; predict: best of {args.passes} passes over the "
          f"{len(base[0]['spans'])} texts of {timed}, median of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}\n")  # type: ignore[arg-type]  # fmt: skip
    print("| tree | fit (s) | predict (ms / intent) | rounds (ms) |")
    print("|---|---:|---:|---|")
    for name, results in rounds.items():
        ms = [float(r["ms_per_intent"]) for r in results]  # type: ignore[arg-type]
        print(f"| {name} | {float(fitted[name]['fit_seconds']):.1f} | **{statistics.median(ms):.2f}** | {', '.join(f'{m:.2f}' for m in ms)} |")  # type: ignore[arg-type]
    print(f"\npredictions differ from {base_name} on {differ} texts")


if __name__ == "__main__":
    main()
