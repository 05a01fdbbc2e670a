"""Every stream service dead-letters poison and carries on, as its own CLI process on the real broker.

For each service (collector, forecaster, intent service, decision stage with ``--adapter kafka``)
the poison corpora of tests/poison.py are interleaved with good messages on fresh topics, the
service runs once as ``python -m nm_toolkit ...`` and the test checks: exit code 0 on that first
run (no crash, so no crash loop), every poison message on the service's dead-letter topic exactly
once (a null value arrives there as an empty value) with a reason and an origin, every good
message's output, and the group's committed offsets at the end of the input topics.

The four processes are started together (module fixture) so that their start-ups overlap; each
test then waits for its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError

from nm_toolkit.bus import Message
from nm_toolkit.bus.deadletter import ORIGIN, REASON
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.schemas import Forecast
from tests.kafka_helpers import expected_windows, llm_env, read_all, windows_frame
from tests.poison import (
    DEEP_ARRAYS,
    DEEP_OBJECTS,
    GOOD_CLOUD_REQUEST,
    GOOD_POINT,
    POISON_CLOUD_REQUESTS,
    POISON_PROMPTS,
    POISON_SERIES,
    POISON_TELEMETRY,
    Poison,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SLICE = Path(__file__).parent / "data" / "nile_intents_slice.json"
WINDOW = 60
PROCESS_TIMEOUT_S = 600  # each service run, start-up (imports) included: seven start at once (180 s was short beside stress --cpu 2)
IDLE_EXIT = "4"


# -- helpers -------------------------------------------------------------------------------------
def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without a developer's NMT_* settings, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NMT_") or k == "NMT_KAFKA_HOME"}
    return {**base, "PYTHONPATH": str(REPO), **extra}


def raw(value: bytes | None) -> bytes:
    """How a poison value reads back from Kafka: a null value is an empty one."""
    return b"" if value is None else value


def committed_vs_end(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(committed offset, end offset) of every partition of ``topics`` for ``group``."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap])
    try:
        tps = [KafkaTopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
        committed = {}  # the group's coordinator is not up yet (a fresh broker): nothing committed so far
    finally:
        admin.close()
    out = {}
    for tp in tps:
        meta = committed.get(tp)
        offset = None if meta is None or meta.offset < 0 else meta.offset
        out[(tp.topic, tp.partition)] = (offset, ends[tp])
    return out


def assert_committed_to_end(bootstrap: str, group: str, topics: list[str]) -> None:
    positions = committed_vs_end(bootstrap, group, topics)
    assert sum(end for _, end in positions.values()) > 0
    behind = {tp: (c, e) for tp, (c, e) in positions.items() if e > 0 and (c is None or c < e)}
    assert not behind, f"group {group} committed short of the end (committed, end): {behind}"


def assert_dead_lettered_once(dead: list[Message], poison: Poison, input_topics: set[str]) -> None:
    """Every poison value on the dead-letter topic exactly once, with a reason and an origin."""
    want = Counter(raw(v) for _, v in poison)
    got = Counter(m.value for m in dead)
    names = {raw(v): name for name, v in poison}
    missing = {names.get(v, v[:60]): n - got[v] for v, n in want.items() if got[v] < n}
    extra = {names.get(v, v[:60]): n - want[v] for v, n in got.items() if n > want[v]}
    assert not missing and not extra, f"dead letters not exactly once: missing {missing}, extra {extra}"
    for message in dead:
        reason, origin = message.header(REASON), message.header(ORIGIN)
        assert reason and reason.strip(), f"no reason on the dead letter of {names.get(message.value)}"
        assert origin and origin.decode().rsplit("/", 2)[0] in input_topics, origin


@dataclass
class Run:
    """One service process and what a test needs to check it."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    group: str
    inputs: list[str]
    dead_letter_topic: str
    poison: Poison
    facts: dict[str, object] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.log_dir,
            stdout=(self.log_dir / "stdout").open("wb"),
            stderr=(self.log_dir / "stderr").open("wb"),
        )

    def wait(self, timeout_s: float = PROCESS_TIMEOUT_S, stop_when: Callable[[], bool] | None = None) -> Run:
        """Wait for the process to exit (or, with ``stop_when``, SIGTERM it once that holds)."""
        assert self.process is not None
        if self.returncode is None:
            deadline = time.monotonic() + timeout_s
            while self.process.poll() is None and time.monotonic() < deadline:
                if stop_when is not None and stop_when():
                    self.process.send_signal(signal.SIGTERM)
                    stop_when = None
                time.sleep(0.5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
                pytest.fail(f"{self.name} did not finish within {timeout_s:.0f} s:\n{self.output()}")
            self.returncode = self.process.returncode
            self.stdout = (self.log_dir / "stdout").read_text(errors="replace")
            self.stderr = (self.log_dir / "stderr").read_text(errors="replace")
        return self

    def output(self) -> str:
        stdout = (self.log_dir / "stdout").read_text(errors="replace")
        stderr = (self.log_dir / "stderr").read_text(errors="replace")
        return f"--- {self.name} stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-5000:]}"

    def stats(self) -> dict[str, object]:
        return orjson.loads(self.stdout[self.stdout.index("{") :])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nm_toolkit", *args]


def common_env(bootstrap: str, state_dir: Path) -> dict[str, str]:
    return {"NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap, "NMT_STATE_DIR": str(state_dir)}


def send(bus: KafkaBus, items: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """(topic, value, key) in this order (None as a value is a Kafka null)."""
    producer = bus.producer()
    for topic, value, key in items:
        producer.send(topic, value, key)  # type: ignore[arg-type] - a null value is the point
    producer.flush()
    producer.close()


def interleave(good: list[tuple[bytes, bytes]], poison: Poison, topic: str) -> list[tuple[str, bytes | None, bytes | None]]:
    """Good (key, value) messages with one poison message after each, keyed like its neighbour."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(good):
        out.append((topic, value, key))
        if i < len(poison):
            out.append((topic, poison[i][1], key))
    out += [(topic, value, good[0][0]) for _, value in poison[len(good) :]]
    return out


# -- scenarios -----------------------------------------------------------------------------------
T0 = 1_704_153_600  # 2024-01-02T00:00:00Z, a day after the poison corpora's good-looking records
SOURCES = [f"good-{i}" for i in range(8)]


def good_telemetry() -> tuple[pd.DataFrame, list[tuple[bytes, bytes]]]:
    """Records of 8 sources x 2 metrics in time order, batched per source, the sources interleaved;
    then one record per series an hour later, which closes every earlier window by watermark (its
    own window stays open: the test does not depend on a processing-time close)."""
    rng = np.random.default_rng(7)
    per_source = 300
    frames = []
    for source in SOURCES:
        ts = T0 + np.arange(per_source) * 10.0 + rng.uniform(0, 5, per_source)
        frames.append(
            pd.DataFrame(
                {
                    "ts": np.round(ts, 3),
                    "source": source,
                    "metric": np.where(np.arange(per_source) % 2 == 0, "rx", "tx"),
                    "value": np.round(rng.gamma(2.0, 50.0, per_source), 3),
                }
            )
        )
    records = pd.concat(frames, ignore_index=True)
    by_source = {s: g.to_dict("records") for s, g in records.groupby("source", sort=True)}
    messages = [
        (source.encode(), orjson.dumps({"records": rows[i : i + 25]}))
        for i in range(0, per_source, 25)
        for source, rows in by_source.items()
    ]
    end = T0 + per_source * 10 + 3600
    for source in SOURCES:
        closers = [{"ts": end, "source": source, "metric": m, "value": 0.0} for m in ("rx", "tx")]
        messages.append((source.encode(), orjson.dumps({"records": closers})))
    return records, messages


def collector_run(bootstrap: str, root: Path, bus: KafkaBus) -> Run:
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"poison-{tag}.{name}" for name in ("telemetry", "series", "dead_letter", "late")}
    bus.create_topics([topics["telemetry"]], partitions=4)
    records, good = good_telemetry()
    send(bus, interleave(good, POISON_TELEMETRY, topics["telemetry"]))
    env = common_env(bootstrap, root / "state") | {
        "NMT_COLLECTOR__GROUP_ID": f"collector-{tag}",
        "NMT_COLLECTOR__WINDOW_SECONDS": str(WINDOW),
        "NMT_COLLECTOR__CHECKPOINT_INTERVAL_SECONDS": "0.2",
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    return Run(
        "collector", cli("collect", "run", "--idle-exit", IDLE_EXIT, "--json"), clean_env(env), root, f"collector-{tag}",
        [topics["telemetry"]], topics["dead_letter"], POISON_TELEMETRY,
        {"records": records, "topics": topics, "good_messages": len(good)},
    )  # fmt: skip


GOOD_SERIES = ["cell-a|traffic", "cell-b|traffic"]


def forecaster_run(bootstrap: str, root: Path, bus: KafkaBus) -> Run:
    tag = uuid.uuid4().hex[:8]
    topics = {"series": f"poison-{tag}.series", "forecasts": f"poison-{tag}.forecasts"}
    dlq = f"poison-{tag}.series.dlq"
    bus.create_topics([topics["series"]], partitions=4)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    good = []
    for hour in range(48):
        for n, series_id in enumerate(GOOD_SERIES):
            source, metric = series_id.split("|")
            value = 10.0 * (n + 1) + hour % 24
            point = {**GOOD_POINT, "source": source, "metric": metric, "window_start": (start + timedelta(hours=hour)).isoformat(),
                     "count": 1, "sum": value, "min": value, "max": value}  # fmt: skip
            good.append((series_id.encode(), orjson.dumps(point)))
    send(bus, interleave(good, POISON_SERIES, topics["series"]))
    env = common_env(bootstrap, root / "state") | {
        "NMT_FORECAST_SERVICE__GROUP_ID": f"forecaster-{tag}",
        "NMT_FORECAST_SERVICE__DEAD_LETTER_TOPIC": dlq,
        "NMT_FORECAST_SERVICE__MODEL": "seasonal_mean",
        "NMT_FORECAST__MIN_HISTORY": "24",
        "NMT_FORECAST__HORIZON": "6",
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    return Run(
        "forecaster", cli("forecast", "serve", "--idle-exit", IDLE_EXIT, "--json"), clean_env(env), root,
        f"forecaster-{tag}", [topics["series"]], dlq, POISON_SERIES, {"topics": topics, "good_points": len(good)},
    )  # fmt: skip


def _random_invalid_utf8(seed: int, count: int) -> Poison:
    rng = np.random.default_rng(seed)
    out: Poison = []
    while len(out) < count:
        value = rng.integers(0, 256, int(rng.integers(2, 2048)), dtype=np.uint8).tobytes()
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            out.append((f"random bytes #{len(out)}", value))
    return out


POISON_OPERATOR: Poison = [
    *_random_invalid_utf8(seed=11, count=6),
    ("truncated JSON", b'{"request_id": "op-t", "text": "block faceb'),
    ("truncated JSON array", b'[{"request_id": "op-t", "text": "block facebook"}'),
    ("deeply nested arrays", DEEP_ARRAYS),
    ("deeply nested objects", DEEP_OBJECTS),
    ("nested text", orjson.dumps({"request_id": "op-n", "text": {"text": {"text": "block facebook"}}})),
    ("JSON array of objects", orjson.dumps([{"request_id": "op-a", "text": "block facebook"}])),
    ("kafka null value", None),
]
GOOD_OPERATOR = [("op-1", "block facebook"), ("op-2", "allow youtube for the guests"), ("op-3", "block netflix")]


def intent_run(bootstrap: str, root: Path, bus: KafkaBus, extractor_dir: Path) -> Run:
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"poison-{tag}.{name}" for name in ("prompts", "operator_intents", "intents", "intent_results", "series", "late")}
    dlq = f"poison-{tag}.intents.dlq"
    bus.create_topics([topics["prompts"], topics["operator_intents"]], partitions=4)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    prompts = [
        (b"cell-1", orjson.dumps({"request_id": f"p-{i}", "text": "I want to watch a 4k movie on netflix", "location": "cell-1",
                                   "ts": (start + timedelta(minutes=5 * i)).isoformat()}))
        for i in range(len(POISON_PROMPTS) + 2)
    ]  # fmt: skip
    operator = [(b"op", orjson.dumps({"request_id": rid, "text": text})) for rid, text in GOOD_OPERATOR]
    send(bus, interleave(prompts, POISON_PROMPTS, topics["prompts"]) + interleave(operator, POISON_OPERATOR, topics["operator_intents"]))
    env = common_env(bootstrap, root / "state") | {
        "NMT_INTENT__GROUP_ID": f"intent-{tag}",
        "NMT_INTENT__DEMAND_TOPIC": f"poison-{tag}.demand",
        "NMT_INTENT__DEAD_LETTER_TOPIC": dlq,
        "NMT_INTENT__EXTRACTOR_DIR": str(extractor_dir),
        "NMT_INTENT__ALLOWED_LATENESS_SECONDS": "0",
        "NMT_INTENT__USER_DEMAND": "keywords",  # the prompts are the intent service's to classify here
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    return Run(
        "intent", cli("intent", "serve", "--idle-exit", IDLE_EXIT, "--json"), clean_env(env), root, f"intent-{tag}",
        [topics["prompts"], topics["operator_intents"]], dlq, [*POISON_PROMPTS, *POISON_OPERATOR],
        {"topics": topics, "prompt_ids": [orjson.loads(v)["request_id"] for _, v in prompts],
         "operator_ids": [rid for rid, _ in GOOD_OPERATOR]},
    )  # fmt: skip


def _forecast(series_id: str, upper: float, now: datetime) -> dict[str, object]:
    return {"series_id": series_id, "model": "test", "issued_at": now.isoformat(), "step_seconds": 3600,
            "start": (now + timedelta(hours=1)).isoformat(), "mean": [upper * 0.9], "lower": [upper * 0.8], "upper": [upper]}  # fmt: skip


def _nan(obj: dict[str, object], field_name: str) -> bytes:
    """``obj`` as JSON with ``field_name`` written as the literal NaN (orjson will not write it)."""
    return orjson.dumps({**obj, field_name: 0}).replace(f'"{field_name}":0'.encode(), f'"{field_name}":NaN'.encode())


GOOD_INTENT = {"id": "i-1", "tenant": "operator", "target": "cell-1", "action": "block", "traffic": {"protocol": "tcp", "port": 23}}


def controller_poison(now: datetime) -> tuple[Poison, Poison]:
    """Poison for the forecasts and the intents tables."""
    forecast = _forecast("cell-8|traffic", 10.0, now)
    forecasts: Poison = [
        ("not JSON", b"forecast: up"),
        ("not UTF-8", b'{"series_id": "\xff\xfe"}'),
        ("wrong schema", orjson.dumps({"series_id": "cell-8|traffic", "mean": "high"})),
        ("a JSON array", orjson.dumps([forecast])),
        ("deeply nested arrays", DEEP_ARRAYS),
        ("deeply nested objects", DEEP_OBJECTS),
        ("nested series_id", orjson.dumps({**forecast, "series_id": {"id": {"id": "cell-8|traffic"}}})),
        ("upper bound NaN", _nan(_forecast("cell-9|traffic", 10.0, now), "upper").replace(b'"upper":NaN', b'"upper":[NaN]')),
        ("mean Infinity", orjson.dumps(_forecast("cell-9|traffic", 10.0, now)).replace(b'"mean":[9.0]', b'"mean":[Infinity]')),
    ]  # a Kafka null value on a table is no poison: it is a tombstone, the key leaves the table (tests/test_tables.py)
    intents: Poison = [
        ("not JSON", b"block everything"),
        ("wrong schema", orjson.dumps({"id": "broken"})),
        ("rate_kbps NaN", _nan({**GOOD_INTENT, "id": "i-nan", "action": "limit"}, "rate_kbps")),
        ("ttl NaN", _nan({**GOOD_INTENT, "id": "i-ttl"}, "ttl_seconds")),
        ("deeply nested objects", DEEP_OBJECTS),
        ("nested traffic", orjson.dumps({**GOOD_INTENT, "id": "i-deep", "traffic": {"protocol": {"protocol": "tcp"}}})),
    ]
    return forecasts, intents


def controller_run(bootstrap: str, root: Path, bus: KafkaBus) -> Run:
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"poison-{tag}.{name}" for name in ("forecasts", "intents", "decisions")}
    dlq = f"poison-{tag}.decisions.dlq"
    bus.create_topics([topics["forecasts"], topics["intents"]], partitions=4)
    now = datetime.now(UTC)
    forecast_poison, intent_poison = controller_poison(now)
    good_forecasts = [(s.encode(), orjson.dumps(_forecast(s, u, now))) for s, u in (("cell-1|traffic", 99.0), ("cell-2|traffic", 10.0))]
    good_intents = [(b"i-1", orjson.dumps(GOOD_INTENT))]
    send(bus, [
        *interleave(good_forecasts, forecast_poison, topics["forecasts"]),
        *interleave(good_intents, intent_poison, topics["intents"]),
    ])  # fmt: skip
    env = common_env(bootstrap, root / "state") | {
        "NMT_CONTROLLER__GROUP_ID": f"controller-{tag}",
        "NMT_CONTROLLER__DEAD_LETTER_TOPIC": dlq,
        "NMT_POLICY__ENABLED": json.dumps(["bandwidth_reservation", "intent_qos_acl"]),
        "NMT_POLICY__CAPACITIES": json.dumps({"cell-1": 100.0, "cell-2": 100.0, "cell-8": 100.0, "cell-9": 100.0}),
        "NMT_CONTROLLER__GUARDRAILS__TENANTS": json.dumps({"operator": ["cell-1"]}),
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    # the decision stage has no --idle-exit: it runs rounds until SIGTERM (a clean stop, exit 0)
    return Run(
        "controller", cli("controller", "run", "--adapter", "kafka", "--interval", "1", "--json"), clean_env(env), root,
        f"controller-{tag}", [topics["forecasts"], topics["intents"]], dlq, [*forecast_poison, *intent_poison],
        {"topics": topics},
    )  # fmt: skip


def _llm_env(bootstrap: str, root: Path, models: Path, tag: str) -> dict[str, str]:
    return llm_env(bootstrap, root / "state", models, f"poison-{tag}") | {"NMT_LLM__REQUEST_TIMEOUT_S": "3600", "NMT_LLM__PROBE_INTERVAL_S": "0"}


def edge_run(bootstrap: str, root: Path, bus: KafkaBus, models: Path) -> Run:
    tag = uuid.uuid4().hex[:8]
    env = _llm_env(bootstrap, root, models, tag)
    topic = env["NMT_TOPICS__PROMPTS"]
    bus.create_topics([topic], partitions=4)
    cell = json.loads((models / "context.json").read_text())["cells"][0]["cell"]
    prompts = [
        (cell.encode(), orjson.dumps({"request_id": f"p-{i}", "text": "coffee near me", "location": cell, "deadline_s": 0.001}))
        for i in range(len(POISON_PROMPTS) + 2)
    ]  # fmt: skip
    send(bus, interleave(prompts, POISON_PROMPTS, topic))
    return Run(
        "edge", cli("llm", "serve", "--idle-exit", IDLE_EXIT, "--json"), clean_env(env), root, env["NMT_LLM__GROUP_ID"],
        [topic], env["NMT_LLM__DEAD_LETTER_TOPIC"], POISON_PROMPTS,
        {"answers": env["NMT_TOPICS__ANSWERS"], "ids": [orjson.loads(v)["request_id"] for _, v in prompts]},
    )  # fmt: skip


def cloud_run(bootstrap: str, root: Path, bus: KafkaBus, models: Path) -> Run:
    tag = uuid.uuid4().hex[:8]
    env = _llm_env(bootstrap, root, models, tag)
    topic = env["NMT_TOPICS__CLOUD_REQUESTS"]
    bus.create_topics([topic], partitions=4)
    requests = [(b"edge-0", orjson.dumps({**GOOD_CLOUD_REQUEST, "request_id": f"c-{i}"})) for i in range(len(POISON_CLOUD_REQUESTS) + 2)]
    send(bus, interleave(requests, POISON_CLOUD_REQUESTS, topic))
    return Run(
        "cloud", cli("llm", "cloud", "--idle-exit", IDLE_EXIT, "--json"), clean_env(env), root, env["NMT_LLM__CLOUD_GROUP_ID"],
        [topic], env["NMT_LLM__CLOUD_DEAD_LETTER_TOPIC"], POISON_CLOUD_REQUESTS,
        {"answers": env["NMT_TOPICS__ANSWERS"], "ids": [orjson.loads(v)["request_id"] for _, v in requests]},
    )  # fmt: skip


@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from intent.data import load_intents
    from intent.tagger import SklearnIntentTagger

    return SklearnIntentTagger().fit(load_intents(SLICE)).save_pretrained(tmp_path_factory.mktemp("extractor"))


@pytest.fixture(scope="module")
def runs(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, extractor_dir: Path, tiny_llms: Path
) -> Iterator[dict[str, Run]]:
    """All six services, started together on their own poisoned topics."""
    bus = KafkaBus(kafka_bootstrap, max_message_bytes=4 * 1024 * 1024)
    makers = {
        "collector": lambda root: collector_run(kafka_bootstrap, root, bus),
        "forecaster": lambda root: forecaster_run(kafka_bootstrap, root, bus),
        "intent": lambda root: intent_run(kafka_bootstrap, root, bus, extractor_dir),
        "controller": lambda root: controller_run(kafka_bootstrap, root, bus),
        "edge": lambda root: edge_run(kafka_bootstrap, root, bus, tiny_llms),
        "cloud": lambda root: cloud_run(kafka_bootstrap, root, bus, tiny_llms),
    }
    out = {name: make(tmp_path_factory.mktemp(name)) for name, make in makers.items()}
    for run in out.values():
        run.start()
    try:
        yield out
    finally:
        for run in out.values():
            run.kill()


def dead_letters(bus: KafkaBus, run: Run) -> list[Message]:
    return read_all(bus, run.dead_letter_topic, len(run.poison), timeout_s=60)


def finished(run: Run, **wait: object) -> Run:
    run.wait(**wait)  # type: ignore[arg-type]
    assert run.returncode == 0, f"{run.name} exited with {run.returncode} on its first run:\n{run.output()}"
    return run


# -- the tests ------------------------------------------------------------------------------------
def test_collector_dead_letters_poison_and_windows_the_rest(runs: dict[str, Run], kafka_bootstrap: str) -> None:
    run = finished(runs["collector"])
    stats = run.stats()
    assert stats["dead_letter_messages"] == len(POISON_TELEMETRY), run.output()
    bus = KafkaBus(kafka_bootstrap)
    assert_dead_lettered_once(dead_letters(bus, run), run.poison, set(run.inputs))

    records: pd.DataFrame = run.facts["records"]  # type: ignore[assignment]
    topics: dict[str, str] = run.facts["topics"]  # type: ignore[assignment]
    want = expected_windows(records, WINDOW)
    got = windows_frame(read_all(bus, topics["series"], len(want), timeout_s=60))
    got = got[got["source"].isin(SOURCES)].sort_values(["source", "metric", "window"]).reset_index(drop=True)
    assert len(got) == len(want), f"{len(got)} windows of the good sources, {len(want)} expected"
    assert (got[["source", "metric", "window", "count"]].to_numpy() == want[["source", "metric", "window", "count"]].to_numpy()).all()
    for column in ("sum", "min", "max"):
        assert np.allclose(got[column].to_numpy(), want[column].to_numpy())
    assert_committed_to_end(kafka_bootstrap, run.group, run.inputs)


def test_forecaster_dead_letters_poison_and_forecasts_the_rest(runs: dict[str, Run], kafka_bootstrap: str) -> None:
    run = finished(runs["forecaster"])
    bus = KafkaBus(kafka_bootstrap)
    dead = dead_letters(bus, run)
    assert_dead_lettered_once(dead, run.poison, set(run.inputs))
    assert not any(b"failed on it" in (m.header(REASON) or b"") for m in dead)  # rejected, not a handler crash
    topics: dict[str, str] = run.facts["topics"]  # type: ignore[assignment]
    forecasts = [Forecast.model_validate_json(m.value) for m in read_all(bus, topics["forecasts"], len(GOOD_SERIES), timeout_s=60)]
    assert {f.series_id for f in forecasts} == set(GOOD_SERIES)
    assert all(len(f.mean) == 6 and all(np.isfinite(f.mean)) for f in forecasts)
    assert_committed_to_end(kafka_bootstrap, run.group, run.inputs)


def test_intent_service_dead_letters_poison_and_answers_the_rest(runs: dict[str, Run], kafka_bootstrap: str) -> None:
    run = finished(runs["intent"])
    stats = run.stats()
    assert stats["dead_letters"] == len(run.poison), run.output()
    bus = KafkaBus(kafka_bootstrap)
    assert_dead_lettered_once(dead_letters(bus, run), run.poison, set(run.inputs))
    topics: dict[str, str] = run.facts["topics"]  # type: ignore[assignment]
    wanted = [*run.facts["prompt_ids"], *run.facts["operator_ids"]]  # type: ignore[misc]
    answers = [orjson.loads(m.value) for m in read_all(bus, topics["intent_results"], len(wanted), timeout_s=60)]
    assert sorted(a["request_id"] for a in answers) == sorted(wanted)
    assert {a["status"] for a in answers if a["source"] == "user"} == {"inferred"}
    assert_committed_to_end(kafka_bootstrap, run.group, run.inputs)


def _decisions(bus: KafkaBus, topic: str) -> list[dict[str, object]]:
    return [orjson.loads(m.value) for m in read_all(bus, topic, 1, timeout_s=10)]


@pytest.fixture(scope="module")
def controller(runs: dict[str, Run], kafka_bootstrap: str) -> Run:
    """The decision stage, stopped with SIGTERM once it has read both tables to their end and
    decided on the good forecast and the good intent."""
    run = runs["controller"]
    topics: dict[str, str] = run.facts["topics"]  # type: ignore[assignment]
    bus = KafkaBus(kafka_bootstrap)

    def done() -> bool:
        positions = committed_vs_end(kafka_bootstrap, run.group, run.inputs)
        if any(e > 0 and (c is None or c < e) for c, e in positions.values()):
            return False
        targets = {(d["policy"], d["target"]) for d in _decisions(bus, topics["decisions"])}
        return {("bandwidth_reservation", "cell-1"), ("intent_qos_acl", "cell-1")} <= targets

    return finished(run, stop_when=done)


def test_controller_dead_letters_poison_and_decides_on_the_rest(controller: Run, kafka_bootstrap: str) -> None:
    run = controller
    bus = KafkaBus(kafka_bootstrap)
    assert_dead_lettered_once(dead_letters(bus, run), run.poison, set(run.inputs))
    topics: dict[str, str] = run.facts["topics"]  # type: ignore[assignment]
    decisions = _decisions(bus, topics["decisions"])
    assert {(d["policy"], d["target"]) for d in decisions} >= {("bandwidth_reservation", "cell-1"), ("intent_qos_acl", "cell-1")}
    assert not any(d["target"] in ("cell-2", "cell-8", "cell-9") for d in decisions)  # low forecast; poison; NaN bounds
    assert_committed_to_end(kafka_bootstrap, run.group, run.inputs)


@pytest.mark.parametrize("name", ["edge", "cloud"])
def test_llm_services_dead_letter_poison_and_answer_the_rest_exactly_once(runs: dict[str, Run], kafka_bootstrap: str, name: str) -> None:
    run = finished(runs[name])
    stats = run.stats()
    assert stats["dead_letters"] == len(run.poison) and stats["handler_errors"] == 0, run.output()
    bus = KafkaBus(kafka_bootstrap, max_message_bytes=4 * 1024 * 1024)
    assert_dead_lettered_once(dead_letters(bus, run), run.poison, set(run.inputs))
    answers = [orjson.loads(m.value) for m in read_all(bus, str(run.facts["answers"]), len(run.facts["ids"]) + len(run.poison), timeout_s=60)]
    good = [a for a in answers if a["status"] == "ok"]
    assert sorted(a["request_id"] for a in good) == sorted(run.facts["ids"])  # type: ignore[arg-type]
    assert len(answers) == len(good) + len(run.poison)  # every poison message answered with its error, once
    assert {a["served_by"] for a in good} == {name}
    assert_committed_to_end(kafka_bootstrap, run.group, run.inputs)
