"""Intent service benchmark: prompts and operator texts per second through the service, each next
to a baseline measured in the same run.

    python bench/intent_service.py [--nile ../shared/data/nile_intents_alpha.json] [--prompts 20000] [--operator 400]

* prompts: the intent service (``intent_runners``) on the embedded bus (poll, validate, infer, publish the intent and its
  demand, window the demand, close windows, commit), versus the baseline of only decoding the same
  prompt bytes and calling ``infer_user_intent`` on them (the inference itself, no bus).
* operator texts: the service (extractor, Nile, conflict check against everything accepted
  before, publish, store, commit), versus the baseline of the extractor and ``structure`` alone
  (``parse_operator_intents`` on the same texts).

Rounds alternate between service and baseline so load on the machine hits both alike; the figure
is the median round.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intent.data import load_intents  # noqa: E402
from intent.evaluation import SpanExtractor  # noqa: E402
from intent.methods import parse_operator_intents  # noqa: E402
from intent.service import intent_runners  # noqa: E402
from intent.tagger import SklearnIntentTagger  # noqa: E402
from intent.user import infer_user_intent  # noqa: E402
from nm_toolkit.bus import EmbeddedBus  # noqa: E402
from nm_toolkit.config import load_settings  # noqa: E402

NILE = Path("../shared/data/nile_intents_alpha.json")  # relative to the repository root, as in the issue
PROMPTS = [
    "I want to watch the match in 4k tonight", "join a multiplayer game with friends", "video call with my team",
    "download the new OS update", "browse the news and check my email", "try the VR headset demo at 50 mbps",
    "stream netflix from 8pm to 11pm", "play online with low lag under 20 ms", "what is the weather like",
]
START = datetime(2024, 3, 1, tzinfo=UTC)


def prompt_messages(n: int, cells: int, key_by: str, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """``n`` (key, prompt) pairs over ``cells`` cells, spread evenly over 48 hours of event time,
    keyed by ``key_by`` (``request_id`` or ``location``)."""
    rng = random.Random(seed)
    step = 48 * 3600 / n
    out = []
    for i in range(n):
        fields = {"request_id": f"r{i}", "text": rng.choice(PROMPTS), "location": f"cell-{rng.randrange(cells):03d}",
                  "ts": (START + timedelta(seconds=i * step)).isoformat()}  # fmt: skip
        out.append((fields[key_by].encode(), orjson.dumps(fields)))
    return out


def through_service(
    extractor: SpanExtractor, topic: str, messages: list[tuple[bytes, bytes]], state_dir: Path, counts: dict[str, int]
) -> float:
    """Seconds for a fresh service to handle ``values`` published to ``topic`` (publishing excluded);
    its counters go to ``counts``."""
    settings = load_settings(state_dir=state_dir, intent={"max_poll_records": 500, "user_demand": "keywords"})
    bus = EmbeddedBus(default_partitions=4)
    service = intent_runners(settings, bus, extractor=extractor)
    producer = bus.producer()
    for key, value in messages:
        producer.send(getattr(settings.topics, topic), value, key)
    start = time.perf_counter()
    while service.intents.stats.messages < len(messages):
        service.intents.step(timeout_s=0.0)
        service.demand.step(timeout_s=0.0)
    while service.demand.step(timeout_s=0.0):  # the last demand records
        pass
    service.collector.close_all_windows(service.demand.emitter)
    elapsed = time.perf_counter() - start
    assert service.service.counters.dead_letters == 0
    counts.update(service.stats_dict())
    for runner in service.runners:
        runner.close()
    return elapsed


def prompt_baseline(messages: list[tuple[bytes, bytes]]) -> float:
    start = time.perf_counter()
    for _, value in messages:
        data = orjson.loads(value)
        infer_user_intent(data["request_id"], data["text"], data["location"])
    return time.perf_counter() - start


def operator_baseline(extractor: SpanExtractor, texts: list[str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), 500):
        parse_operator_intents(extractor, texts[i : i + 500])
    return time.perf_counter() - start


def median_rate(n: int, rounds: list[Callable[[], float]], repeats: int) -> list[float]:
    """Items per second of each round function, median over ``repeats`` interleaved runs."""
    times: list[list[float]] = [[] for _ in rounds]
    for _ in range(repeats):
        for i, run in enumerate(rounds):
            times[i].append(run())
    return [n / statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nile", type=Path, default=NILE, help="operator texts to train on and replay")
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--operator", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    intents = load_intents(args.nile)
    extractor = SklearnIntentTagger().fit(intents)
    by_request = prompt_messages(args.prompts, args.cells, "request_id")
    by_location = prompt_messages(args.prompts, args.cells, "location")
    rng = random.Random(1)
    texts = [rng.choice(intents).text for _ in range(args.operator)]
    operator = [(f"op{i}".encode(), orjson.dumps({"request_id": f"op{i}", "text": t})) for i, t in enumerate(texts)]
    counts: dict[str, dict[str, int]] = {"request": {}, "location": {}, "operator": {}}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        base, keyed_request, keyed_location = median_rate(
            args.prompts,
            [
                lambda: prompt_baseline(by_request),
                lambda: through_service(extractor, "prompts", by_request, state, counts["request"]),
                lambda: through_service(extractor, "prompts", by_location, state, counts["location"]),
            ],
            args.repeats,
        )
        op_base, op_service = median_rate(
            args.operator,
            [
                lambda: operator_baseline(extractor, texts),
                lambda: through_service(extractor, "operator_intents", operator, state, counts["operator"]),
            ],
            args.repeats,
        )
    print(f"{args.prompts} prompts (48 h of event time, {args.cells} cells) and {args.operator} operator texts from "
          f"{args.nile.name}, read as a backlog from 4 partitions; median of {args.repeats}\n")  # fmt: skip
    print("| input | loop | per second | vs baseline | demand records late |")
    print("|---|---|---:|---:|---:|")
    print(f"| prompts | baseline: decode + `infer_user_intent` | {base:,.0f} | 1.00 | |")
    for name, rate, c in (("request id", keyed_request, counts["request"]), ("location", keyed_location, counts["location"])):
        late = f"{c['demand_late']:,} of {c['demand_records']:,}"
        print(f"| prompts keyed by {name} | **intent service** (embedded bus, demand windowed) | **{rate:,.0f}** | {rate / base:.2f} | {late} |")
    print(f"| operator texts | baseline: tagger + `structure` | {op_base:,.0f} | 1.00 | |")
    print(f"| operator texts | **intent service** (+ Nile, conflicts vs all accepted, store) | **{op_service:,.0f}** | {op_service / op_base:.2f} | |")
    c = counts["operator"]
    print(f"\noperator texts: {c['accepted']} accepted, {c['conflicting']} conflicting, {c['clarifications']} to clarify")


if __name__ == "__main__":
    main()
