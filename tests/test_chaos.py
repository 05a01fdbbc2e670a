"""Chaos on a collector group, on a broker of its own: members join, die, leave, the broker restarts.

The scenario (one test): a producer thread sends ~36,000 records of 60 sources, keyed by source and
each source in time order, in stages; collector processes of one group (one shared ``state_dir``)
join one by one up to three while data flows, one is SIGKILLed and another started in its place,
one leaves with SIGTERM, then the broker is stopped and started again on its data directory while
the two left keep running; they finish by idle exit. Every window on the series topic must equal
pandas' aggregation of the input, nothing lost, nothing counted twice, nothing dead-lettered or
late, and no member may exit non-zero except the one killed (a member dying on a rebalance is the
bug this guards against).

Then the dead-letter path at the broker's size limit: a telemetry message just under the broker's
``message.max.bytes`` is dead-lettered cut to fit (``nmt.error.truncated``); and a dead letter the
broker refuses stops the collector with exit code 1, committing nothing past it, so that a restart
configured with the right limit dead-letters it.

Members are started "warm": a process imports the CLI (seconds on two busy cores) and then waits
for a go file before calling the same ``main()`` as ``python -m nm_toolkit``; this keeps join
times short enough that every event happens while data flows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from nm_toolkit.bus.deadletter import ORIGIN, REASON, TRUNCATED
from nm_toolkit.bus.kafka import KafkaBus
from nm_toolkit.devtools.kafka import KafkaBroker
from tests.kafka_helpers import expected_windows, read_all, windows_frame

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BROKER_LIMIT = 1_048_588  # the broker's message.max.bytes (Kafka's default)
WINDOW = 60
IDLE_EXIT_S = 40  # > a broker restart plus kafka-python's reconnect backoff: members must outlive it
OUTAGES = 1  # broker restarts (each while data flows); more, and kafka-python's reconnect backoff outgrows IDLE_EXIT_S

WARM_MEMBER = """
import sys, time
from pathlib import Path
import nm_toolkit.cli as cli  # what `python -m nm_toolkit` imports, done before the go
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.05)
sys.argv = ["nmt", *sys.argv[3:]]
cli.main()
"""


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NMT_") or k == "NMT_KAFKA_HOME"}
    return {**base, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own (it is restarted), keeping its data in a directory."""
    kafka = KafkaBroker(data_dir=tmp_path_factory.mktemp("chaos-kafka"), partitions=6, max_message_bytes=BROKER_LIMIT)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@dataclass
class Member:
    """A collector process, started warm and released with :meth:`go`."""

    name: str
    env: dict[str, str]
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", WARM_MEMBER, str(self.ready_file), str(self.go_file), *self.args],
            env=self.env,
            cwd=self.directory,
            stdout=(self.directory / "stdout").open("wb"),
            stderr=(self.directory / "stderr").open("wb"),
        )

    @property
    def ready_file(self) -> Path:
        return self.directory / "ready"

    @property
    def go_file(self) -> Path:
        return self.directory / "go"

    def go(self) -> None:
        self.go_file.touch()

    @property
    def ready(self) -> bool:
        return self.ready_file.exists()

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stdout(self) -> str:
        return (self.directory / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.directory / "stderr").read_text(errors="replace")

    def stats(self) -> dict[str, float]:
        out = self.stdout()
        return orjson.loads(out[out.index("{") :])

    def report(self) -> str:
        return f"=== {self.name} (exit {self.process.poll()}) stdout ===\n{self.stdout()[-2500:]}\n=== stderr ===\n{self.stderr()[-6000:]}"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, report: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{report()}")


def group_members(bootstrap: str, group: str) -> tuple[str, set[str]]:
    """The group's state and member ids ("", set() while the broker cannot say)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=[bootstrap], request_timeout_ms=5000)
    except KafkaError:
        return "", set()
    try:
        description = admin.describe_groups([group])
        info = description[group] if isinstance(description, dict) else description[0]
        info = info if isinstance(info, dict) else info._asdict()
        state = info.get("group_state") or info.get("state") or ""
        members = info.get("members") or []
        ids = {m["member_id"] if isinstance(m, dict) else m.member_id for m in members}
        return str(state), ids
    except KafkaError:
        return "", set()
    finally:
        admin.close()


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap])
    try:
        tps = [KafkaTopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:
        return {}
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def topics_for(tag: str) -> dict[str, str]:
    return {name: f"chaos-{tag}.{name}" for name in ("telemetry", "series", "dead_letter", "late")}


def collector_env(bootstrap: str, state_dir: Path, group: str, topics: dict[str, str], **extra: str) -> dict[str, str]:
    return clean_env(
        {
            "NMT_BUS__KIND": "kafka",
            "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
            "NMT_BUS__SESSION_TIMEOUT_MS": "6000",
            "NMT_BUS__HEARTBEAT_INTERVAL_MS": "1000",
            "NMT_BUS__MAX_MESSAGE_BYTES": str(BROKER_LIMIT),
            "NMT_STATE_DIR": str(state_dir),
            "NMT_COLLECTOR__GROUP_ID": group,
            "NMT_COLLECTOR__WINDOW_SECONDS": str(WINDOW),
            "NMT_COLLECTOR__CHECKPOINT_INTERVAL_SECONDS": "0.1",
            "NMT_COLLECTOR__MAX_POLL_RECORDS": "50",
            **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
            **extra,
        }
    )


# -- data -----------------------------------------------------------------------------------------
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
N_SOURCES = 60
PER_SOURCE = 600
PER_MESSAGE = 12


def chaos_records() -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    frames = []
    for s in range(N_SOURCES):
        ts = T0 + np.arange(PER_SOURCE) * 5.0 + rng.uniform(0, 4, PER_SOURCE)
        frames.append(
            pd.DataFrame(
                {
                    "ts": np.round(ts, 3),
                    "source": f"src-{s:02d}",
                    "metric": np.where(rng.random(PER_SOURCE) < 0.5, "rx_bps", "tx_bps"),
                    "value": np.round(rng.gamma(2.0, 50.0, PER_SOURCE), 3),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def chaos_messages(records: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """Messages of PER_MESSAGE records keyed by source, sources round robin (each in time order);
    last, per source, a record per metric an hour after its data, which closes all its windows by
    watermark (those windows stay open and are not compared)."""
    by_source = {str(s): g.to_dict("records") for s, g in records.groupby("source", sort=True)}
    out = [
        (source.encode(), orjson.dumps({"records": rows[i : i + PER_MESSAGE]}))
        for i in range(0, PER_SOURCE, PER_MESSAGE)
        for source, rows in by_source.items()
    ]
    closing = T0 + PER_SOURCE * 5 + 3600
    for source in by_source:
        closers = [{"ts": closing, "source": source, "metric": m, "value": 0.0} for m in ("rx_bps", "tx_bps")]
        out.append((source.encode(), orjson.dumps({"records": closers})))
    return out


class StagedProducer(threading.Thread):
    """Sends ``messages`` in ``len(gates) + 1`` chunks, each paced over ``chunk_s`` seconds;
    chunk k+1 starts once ``gates[k]`` is set (so each chaos event happens while data flows)."""

    def __init__(self, bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], gates: list[threading.Event], chunk_s: float) -> None:
        super().__init__(daemon=True)
        self.bus = KafkaBus(bootstrap)
        self.topic = topic
        self.chunks = np.array_split(np.arange(len(messages)), len(gates) + 1)
        self.messages = messages
        self.gates = gates
        self.chunk_s = chunk_s
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            producer = self.bus.producer()
            for k, chunk in enumerate(self.chunks):
                if k:
                    while not self.gates[k - 1].wait(0.2):
                        if self.abort.is_set():
                            return
                pause = self.chunk_s / max(1, len(chunk) // 20)
                for j, i in enumerate(chunk):
                    key, value = self.messages[i]
                    producer.send(self.topic, value, key)
                    self.sent += 1
                    if j % 20 == 19:
                        producer.flush()
                        time.sleep(pause)
                producer.flush()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def assert_exact(got: pd.DataFrame, records: pd.DataFrame) -> None:
    """Every window once with pandas' count/sum/min/max; a window emitted twice, identically."""
    keys = ["source", "metric", "window"]
    dupes = got[got.duplicated(keys, keep=False)]
    differing = dupes.groupby(keys).nunique().gt(1).any(axis=1)
    assert not differing.any(), f"windows emitted twice with different contents: {list(differing[differing].index)[:5]}"
    got = got.drop_duplicates(keys).sort_values(keys).reset_index(drop=True)
    want = expected_windows(records, WINDOW)
    merged = want.merge(got, on=keys, how="outer", suffixes=("_want", "_got"), indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    extra = merged[merged["_merge"] == "right_only"]
    assert missing.empty and extra.empty, f"{len(missing)} windows missing, e.g. {missing[keys].head(3).to_dict('records')}; {len(extra)} unexpected"
    assert (merged["count_want"] == merged["count_got"]).all(), "counts differ: records lost or counted twice"
    for column in ("sum", "min", "max"):
        assert np.allclose(merged[f"{column}_want"], merged[f"{column}_got"]), f"{column} differs"
    assert int(got["count"].sum()) == len(records)


# -- the chaos test ------------------------------------------------------------------------------------
def test_collector_group_survives_joins_kills_leaves_and_a_broker_restart(broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topics, group = topics_for(tag), f"chaos-collector-{tag}"
    bus = KafkaBus(bootstrap)
    bus.create_topics([topics["telemetry"]], partitions=6)
    records = chaos_records()
    messages = chaos_messages(records)
    env = collector_env(bootstrap, tmp_path / "state", group, topics)
    args = ["collect", "run", "--idle-exit", str(IDLE_EXIT_S), "--json"]
    members = {name: Member(name, env, tmp_path / name, args) for name in ("a", "b", "c", "b2")}

    def report() -> str:
        return "\n".join(m.report() for m in members.values())

    gates = [threading.Event() for _ in range(5 + OUTAGES)]
    producer = StagedProducer(bootstrap, topics["telemetry"], messages, gates, chunk_s=4.0)
    try:
        wait_for(lambda: all(m.ready for m in members.values()), 180, "the members' imports", report)
        producer.start()  # chunk 0: a backlog before anyone reads

        def joined(n: int) -> Callable[[], bool]:
            def settled() -> bool:
                state, ids = group_members(bootstrap, group)
                return state == "Stable" and len(ids) == n

            return settled

        # members join one by one while data flows
        for n, name in enumerate(("a", "b", "c"), start=1):
            members[name].go()
            wait_for(joined(n), 90, f"member {name} to join ({n} in the group)", report)
            gates[n - 1].set()
            time.sleep(2.0)
        # one dies (SIGKILL: no leave, its partitions wait for the session timeout) and a new one takes its place
        _, before_kill = group_members(bootstrap, group)
        members["b"].process.send_signal(signal.SIGKILL)
        members["b"].wait(10)
        members["b2"].go()
        wait_for(
            lambda: (lambda s, ids: s == "Stable" and len(ids) == 3 and len(ids & before_kill) == 2)(*group_members(bootstrap, group)),
            90, "the replacement of the killed member", report,
        )  # fmt: skip
        gates[3].set()
        time.sleep(2.0)
        # one leaves cleanly
        members["c"].process.send_signal(signal.SIGTERM)
        assert members["c"].wait(60) is not None, report()
        wait_for(joined(2), 60, "the group to settle on 2 members", report)
        gates[4].set()
        time.sleep(2.0)
        # the broker restarts on its data, while the two members run and the producer sends
        for outage in range(OUTAGES):
            broker.stop()
            time.sleep(1.0)
            broker.start()
            gates[5 + outage].set()
            time.sleep(2.0)
        producer.join(240)
        assert not producer.is_alive() and producer.error is None, f"producer: {producer.error!r}"
        assert producer.sent == len(messages)
        for name in ("a", "b2"):
            assert members[name].wait(IDLE_EXIT_S + 180) is not None, f"{name} did not exit\n{report()}"
    finally:
        producer.abort.set()
        for member in members.values():
            member.kill()

    # every check runs, so that a failure says whether data suffered too
    problems: list[str] = []

    def check(what: str, test: Callable[[], object]) -> None:
        try:
            result = test()
        except Exception as exc:  # noqa: BLE001 - collected and reported together
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
            return
        if result is False:
            problems.append(what)

    codes = {name: m.process.returncode for name, m in members.items()}
    check(f"exit codes {codes}, want a, c, b2: 0 and b: -9", lambda: codes == {"a": 0, "b": -signal.SIGKILL, "c": 0, "b2": 0})
    for name in ("a", "c", "b2"):
        check(
            f"{name} reports no dead letters and no late records",
            lambda name=name: (lambda st: st["dead_letter_records"] == 0 and st["late_records"] == 0)(members[name].stats()),
        )
    ends = end_offsets(bootstrap, [topics["dead_letter"], topics["late"], topics["telemetry"]])
    check("nothing on the dead-letter and late topics", lambda: sum(o for (t, _), o in ends.items() if t != topics["telemetry"]) == 0)
    positions = committed(bootstrap, group)
    behind = {tp: (positions.get(tp), e) for tp, e in ends.items() if tp[0] == topics["telemetry"] and positions.get(tp, -1) < e}
    check(f"offsets committed to the end of the telemetry topic (behind: {behind})", lambda: not behind)
    want = expected_windows(records, WINDOW)
    got = windows_frame(read_all(bus, topics["series"], len(want), timeout_s=90))
    check("windows equal pandas' aggregation, each once", lambda: assert_exact(got[got["window"] < T0 + PER_SOURCE * 5 + 3600], records))
    print(f"chaos: {len(records):,} records, {len(messages):,} messages, {len(want):,} windows expected, {len(got):,} read; "
          f"exit codes {codes}; problems: {problems}")  # fmt: skip
    assert not problems, "\n".join(problems) + "\n" + report()


# -- dead letters at the broker's size limit ------------------------------------------------------------
def run_collector(env: dict[str, str], cwd: Path, timeout_s: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nm_toolkit", "collect", "run", "--idle-exit", "4", "--json"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def good_batch(source: str, start: float, n: int = 30) -> tuple[pd.DataFrame, list[tuple[bytes, bytes]]]:
    """``n`` records of one source and metric every 10 s, in 3 messages, then one closing record."""
    frame = pd.DataFrame({"ts": start + np.arange(n) * 10.0, "source": source, "metric": "rx_bps", "value": np.arange(n) + 1.0})
    rows = frame.to_dict("records")
    out = [(source.encode(), orjson.dumps({"records": rows[i : i + 10]})) for i in range(0, n, 10)]
    out.append((source.encode(), orjson.dumps({"ts": start + 7200, "source": source, "metric": "rx_bps", "value": 0.0})))
    return frame, out


def test_a_message_at_the_broker_limit_is_dead_lettered_cut_to_fit(broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topics, group = topics_for(tag), f"limit-{tag}"
    bus = KafkaBus(bootstrap, max_message_bytes=BROKER_LIMIT)
    bus.create_topics([topics["telemetry"]], partitions=6)
    head = b'{"ts": 1704067200, "metric": "rx_bps", "value": 1.0, "source": "'
    big = head + "\U0010ffff".encode() * ((BROKER_LIMIT - 200 - len(head)) // 4) + b'"}'
    assert BROKER_LIMIT - 210 <= len(big) < BROKER_LIMIT - 150  # the record batch around it fits, barely
    frame, good = good_batch("link-1", T0)
    producer = bus.producer()
    for key, value in good[:2]:
        producer.send(topics["telemetry"], value, key)
    producer.send(topics["telemetry"], big, b"link-1")
    for key, value in good[2:]:
        producer.send(topics["telemetry"], value, key)
    producer.flush()

    done = run_collector(collector_env(bootstrap, tmp_path / "state", group, topics), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = orjson.loads(done.stdout[done.stdout.index("{") :])
    assert stats["dead_letter_messages"] == 1 and stats["records"] == len(frame) + 1, stats

    (dead,) = read_all(bus, topics["dead_letter"], 1, timeout_s=30)
    assert dead.header(TRUNCATED) == str(len(big)).encode()
    assert 0 < len(dead.value) < len(big) and big.startswith(dead.value)
    assert dead.header(REASON) and dead.header(ORIGIN).startswith(topics["telemetry"].encode())
    assert sum(len(k) + len(v) for k, v in dead.headers) + len(dead.value) + len(dead.key or b"") < BROKER_LIMIT
    got = windows_frame(read_all(bus, topics["series"], 5, timeout_s=30))
    got = got[got["window"] < T0 + 7200]
    want = expected_windows(frame, WINDOW)
    assert got.sort_values("window")[["window", "count", "sum"]].to_numpy().tolist() == want[["window", "count", "sum"]].to_numpy().tolist()


@dataclass
class RefusedDeadLetter:
    """A collector whose dead letter the broker refuses: its first run, and where the message is."""

    topics: dict[str, str]
    group: str
    env: dict[str, str]
    big: bytes
    partition: int
    offset: int
    first: subprocess.CompletedProcess[str]
    committed_after_first: dict[tuple[str, int], int]


@pytest.fixture(scope="module")
def refused(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> RefusedDeadLetter:
    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topics, group = topics_for(tag), f"refused-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    # the telemetry topic takes messages up to 4 MiB; the dead-letter topic keeps the broker's limit
    admin.create_topics([NewTopic(topics["telemetry"], 6, 1, topic_configs={"max.message.bytes": str(4 * 1024 * 1024)})])
    admin.close()
    record = {"ts": T0 + 30, "source": "link-2", "metric": "rx_bps", "value": 1.0}
    big = orjson.dumps({"records": [record] * (1_500_000 // (len(orjson.dumps(record)) + 1))})
    assert 1_400_000 < len(big) < 1_700_000
    _, good = good_batch("link-2", T0)
    producer = KafkaProducer(bootstrap_servers=[bootstrap], max_request_size=8 * 1024 * 1024)
    for key, value in good[:2]:
        producer.send(topics["telemetry"], value, key).get(30)
    meta = producer.send(topics["telemetry"], big, b"link-2").get(30)
    for key, value in good[2:]:
        producer.send(topics["telemetry"], value, key).get(30)
    producer.close()

    directory = tmp_path_factory.mktemp("refused")
    env = collector_env(bootstrap, directory / "state", group, topics, NMT_COLLECTOR__MAX_MESSAGE_BYTES="1000000")
    # the bus is told the broker takes 16 MB: the dead letter is sent whole, and refused
    first = run_collector({**env, "NMT_BUS__MAX_MESSAGE_BYTES": "16000000"}, directory)
    return RefusedDeadLetter(topics, group, env, big, meta.partition, meta.offset, first, committed(bootstrap, group))


def test_a_refused_dead_letter_stops_the_collector_with_one_line(refused: RefusedDeadLetter) -> None:
    first = refused.first
    assert first.returncode == 1, f"exit {first.returncode}\n{first.stdout[-2000:]}\n{first.stderr[-4000:]}"
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]  # ours, not kafka-python's log
    assert len(errors) == 1 and "DeliveryFailed" in errors[0], first.stderr[-4000:]
    assert "Traceback" not in first.stderr, first.stderr[-4000:]


def test_a_refused_dead_letter_is_not_committed_past_and_a_restart_dead_letters_it(
    refused: RefusedDeadLetter, broker: KafkaBroker, tmp_path: Path
) -> None:
    assert refused.first.returncode == 1
    tp = (refused.topics["telemetry"], refused.partition)
    assert refused.committed_after_first.get(tp, 0) <= refused.offset, (
        f"committed {refused.committed_after_first.get(tp)} past the refused message at offset {refused.offset}"
    )
    second = run_collector(refused.env, tmp_path)  # the right limit: the dead letter is cut to fit
    assert second.returncode == 0, second.stderr[-3000:]
    bus = KafkaBus(broker.bootstrap_servers)
    dead = read_all(bus, refused.topics["dead_letter"], 1, timeout_s=30)
    assert len(dead) == 1 and dead[0].header(TRUNCATED) == str(len(refused.big)).encode()
    assert refused.big.startswith(dead[0].value) and "exceeds" in dead[0].header(REASON).decode()
    positions = committed(broker.bootstrap_servers, refused.group)
    assert positions.get(tp, 0) > refused.offset


# -- a broker outage, deterministically: kafka-python's errors injected --------------------------------------
@pytest.mark.parametrize(
    ("operation", "error"),
    [("poll", KafkaConnectionError), ("commit", KafkaConnectionError), ("commit", KafkaTimeoutError)],
)
def test_a_transient_kafka_error_does_not_stop_the_service(
    broker: KafkaBroker, tmp_path: Path, operation: str, error: type[KafkaError]
) -> None:
    """What kafka-python 3 raises out of poll and commit while the broker restarts (members of the
    chaos test died of it, now and then), raised once on purpose: the member must carry on, and
    commit its offsets once the broker answers again."""
    from collectors.service import telemetry_collector
    from nm_toolkit.bus.runtime import StreamRunner
    from nm_toolkit.config import load_settings

    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topics, group = topics_for(tag), f"transient-{tag}"
    settings = load_settings(
        bus={"kind": "kafka", "bootstrap_servers": bootstrap, "max_message_bytes": BROKER_LIMIT},
        topics=topics,
        collector={"group_id": group, "window_seconds": WINDOW, "checkpoint_interval_seconds": 3600},  # commits: explicit
        state_dir=tmp_path,
    )
    bus = KafkaBus(bootstrap, max_message_bytes=BROKER_LIMIT)
    bus.create_topics([topics["telemetry"]], partitions=6)
    _, good = good_batch("link-3", T0)
    producer = bus.producer()
    for key, value in good:
        producer.send(topics["telemetry"], value, key)
    producer.flush()
    need = 1 if operation == "commit" else 0  # a commit needs something handled and not yet committed
    # Now and then (1 in 6-8 here) a new member never gets partitions: kafka-python 3.0.12 can drop the
    # SyncGroup answer of a rejoin (its first assignment, made before the topic's metadata arrived, was
    # empty) when a short poll stopped waiting for it, and the member then sits outside the group for
    # good. That is not what this test is about: a member that has not joined in 20 s is replaced.
    for _attempt in range(3):
        runner = StreamRunner(bus, telemetry_collector(settings, bus))
        deadline = time.monotonic() + 20
        while (runner.stats.messages < need or not runner.joined) and time.monotonic() < deadline:
            runner.step(0.2)
        if runner.joined and runner.stats.messages >= need:
            break
        runner.close()
    else:
        pytest.fail(f"no member of {group} got partitions in three tries")
    deadline = time.monotonic() + 60
    try:
        client = runner.consumer._consumer  # noqa: SLF001 - the kafka-python consumer under the bus
        real = getattr(client, operation)
        calls = 0

        def fails_once(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise error("111 ECONNREFUSED" if error is KafkaConnectionError else "Timeout waiting for future")
            return real(*args, **kwargs)

        setattr(client, operation, fails_once)
        if operation == "poll":
            runner.step(0.2)  # the outage: must not raise
        else:
            runner.commit()  # the outage: must not raise
        assert calls == 1
        while runner.stats.messages < len(good) and time.monotonic() < deadline:
            runner.step(0.2)
        runner.commit()  # the broker answers again: what was handled gets committed
    finally:
        runner.close()
    ends = end_offsets(bootstrap, [topics["telemetry"]])
    positions = committed(bootstrap, group)
    assert all(positions.get(tp, 0) == end for tp, end in ends.items()), (positions, ends)


# -- idle close across a broker outage -----------------------------------------------------------------
def test_a_broker_outage_longer_than_the_idle_close_leaves_every_window_exact(broker: KafkaBroker, tmp_path: Path) -> None:
    """Records flow until the broker stops; it stays down longer than the idle-close time and the
    session timeout (the collector must rejoin its group), and more records of the same, still
    open, windows are in the log as it comes back. Neither the outage nor the rejoin is idleness,
    nor is silence while records wait in the log unfetched: no record is late, and once the topic
    is really idle the windows close with every record counted."""
    idle_close_s, outage_s = 4.0, 12.0
    bootstrap = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topics, group = topics_for(tag), f"idle-{tag}"
    KafkaBus(bootstrap).create_topics([topics["telemetry"]], partitions=6)
    sources = [f"src-{s:02d}" for s in range(12)]
    sent: list[dict[str, object]] = []

    def send(values: list[dict[str, object]]) -> None:
        bus = KafkaBus(bootstrap)
        producer = bus.producer()
        for value in values:
            producer.send(topics["telemetry"], orjson.dumps(value), str(value["source"]).encode())
        producer.flush()
        producer.close()
        sent.extend(values)

    def batch(step: int) -> list[dict[str, object]]:  # one record per source, all in the first window
        return [{"ts": T0 + step, "source": s, "metric": "rx_bps", "value": float(step + i)} for i, s in enumerate(sources)]

    env = collector_env(bootstrap, tmp_path / "state", group, topics, NMT_COLLECTOR__IDLE_CLOSE_SECONDS=str(idle_close_s))
    member = Member("idle", env, tmp_path / "idle", ["collect", "run", "--idle-exit", "15", "--json"])
    try:
        wait_for(lambda: member.ready, 180, "the member's imports", member.report)
        member.go()
        wait_for(lambda: group_members(bootstrap, group)[0] == "Stable", 90, "the member to join", member.report)
        step = 0
        # Records every second (never idle) until the member has read all sent so far, then the outage.
        deadline = time.monotonic() + 120
        while True:
            send(batch(step))
            step += 1
            ends = end_offsets(bootstrap, [topics["telemetry"]])
            positions = committed(bootstrap, group)
            if all(positions.get(tp, -1) >= end for tp, end in ends.items()) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        broker.stop()
        time.sleep(outage_s)
        # The member watched the outage; it is paused while the broker comes back and the same
        # windows' records land, so they are in the log before it looks again, however slowly
        # the producer reconnects (otherwise 4 s of a running member's silence would be real idleness).
        member.process.send_signal(signal.SIGSTOP)
        try:
            broker.start()
            send(batch(step) + batch(step + 1))
        finally:
            member.process.send_signal(signal.SIGCONT)
        assert member.wait(15 + 240) == 0, member.report()
    finally:
        member.kill()
    stats = member.stats()
    assert stats["late_records"] == 0, member.report()
    records = pd.DataFrame(sent)
    got = windows_frame(read_all(KafkaBus(bootstrap), topics["series"], len(sources), timeout_s=90))
    assert_exact(got, records)
