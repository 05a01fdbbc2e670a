"""Every ``nmt`` command as a person runs it, and as a script does.

``SWEEP`` is the explicit list of commands (argv + what each needs). Each one runs in its human form
(rich tables, no ``--json``, 80 columns) and with ``--json``; a run fails on a traceback, on a
non-zero exit that is not a one-line user error with the fix, on a table cell cut short with an
ellipsis, and (``--json``) on output that is not one JSON document. ``test_every_command_is_swept``
fails when a command is registered that ``SWEEP`` does not run, so new commands must join.

Commands that need a shared bus run on the session's Kafka broker with topics and groups of their
own; the others run on the embedded bus. Inputs are the small files in ``tests/data`` and the tiny
models of the ``tiny_llms`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nm_toolkit.cli import app
from nm_toolkit.cli.output import table
from nm_toolkit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
MILAN = DATA / "milan_4cells_21days.csv"
INTENTS = DATA / "nile_intents_slice.json"
# A one-line error names its fix: a command to run, or something to pass, set or choose.
FIX = re.compile(r"`nmt |\b(pass|set|use|choose|try|train|run|build|fix|export|pick)\b", re.IGNORECASE)

pytestmark = pytest.mark.timeout(900)  # the tiny demo trains the built-in intent extractor on first use: minutes on a busy machine


@dataclass
class Workspace:
    """What the sweep's commands share: a state directory, files, and the environment they run in."""

    root: Path
    env: dict[str, str]
    kafka_env: dict[str, str] = field(default_factory=dict)
    llm_env: dict[str, str] = field(default_factory=dict)
    done: dict[str, object] = field(default_factory=dict)
    fresh_count: int = 0

    def fresh(self) -> Path:
        """A new path under the workspace (for commands that want an empty output directory)."""
        self.fresh_count += 1
        return self.root / f"fresh-{self.fresh_count}"


@dataclass(frozen=True)
class Case:
    """One command: ``argv`` (``{ws}``, ``{fresh}``, ``{cell}`` are filled in per run), what it
    needs first (``setup``), whether it runs on Kafka or with the tiny LLMs, and, for a command
    whose right answer here is a one-line error, a part of that error."""

    argv: tuple[str, ...]
    setup: Callable[[Workspace], None] | None = None
    kafka: bool = False
    llms: bool = False
    error: str | None = None
    subprocess_signal: bool = False  # runs until Ctrl-C: started as a process, interrupted once it is up
    json: bool = True
    env: tuple[tuple[str, str], ...] = ()  # NMT_* settings of this command (``{ws}`` filled in)

    @property
    def id(self) -> str:
        words = [a for a in self.argv if not a.startswith("-") and "{" not in a and "/" not in a and " " not in a]
        return "-".join(words[:2]) + ("-error" if self.error else "") + ("-up" if self.subprocess_signal else "")


def invoke(ws: Workspace, args: list[str], env: dict[str, str]) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(app, args, env={**ws.env, **env}, catch_exceptions=True)
    return result.exit_code, result.stdout, result.stderr, result.exception


def run_json(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> object:
    code, out, err, exc = invoke(ws, [*args, "--json"], env or {})
    assert code == 0 and exc is None, f"{args}: {code} {exc!r}\n{out}\n{err}"
    return json.loads(out)


# --- setups: what a command needs before it can run -------------------------------------------------


def once(key: str) -> Callable[[Callable[[Workspace], None]], Callable[[Workspace], None]]:
    def wrap(fn: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
        def setup(ws: Workspace) -> None:
            if key not in ws.done:
                fn(ws)
                ws.done[key] = True

        return setup

    return wrap


@once("stored forecasts")
def stored_forecasts(ws: Workspace) -> None:
    run_json(ws, "forecast", "predict", "-i", str(MILAN), "--model", "seasonal_mean")


@once("policy context")
def policy_context(ws: Workspace) -> None:
    forecast = {
        "series_id": "cell-1|mbps", "model": "seasonal_naive", "issued_at": "2024-03-01T00:00:00Z", "step_seconds": 3600,
        "start": "2024-03-01T01:00:00Z", "mean": [76.0], "lower": [0.0], "upper": [95.0],
    }
    (ws.root / "context.json").write_text(json.dumps({"capacities": {"cell-1": 100.0}, "forecasts": [forecast]}))


@once("completion data")
def completion_data(ws: Workspace) -> None:
    run_json(ws, "llm", "dataset", "-o", str(ws.root / "completion"), "--train", "16", "--test", "4")


@once("adapter")
def adapter(ws: Workspace) -> None:
    completion_data(ws)
    run_json(ws, "model", "finetune", "--base", ws.llm_env["NMT_LLM__EDGE_MODEL"], "--task", "prompt_completion",
             "--data", str(ws.root / "completion" / "train.jsonl"), "--adapter", "swept", "--epochs", "0.25",
             "--batch-size", "4", "--registry", str(ws.root / "adapters"))


@once("telemetry")
def telemetry(ws: Workspace) -> None:
    run_json(ws, "collect", "publish", "-i", str(MILAN), env=ws.kafka_env)


# --- the sweep: every command of README.md's table and of nm_toolkit/cli -----------------------------

SWEEP: tuple[Case, ...] = (
    Case(("demo", "--size", "tiny", "--cells", "3", "--days", "8")),
    Case(("dev", "kafka", "--fetch-only")),
    Case(("dev", "kafka", "--port", "0", "--data-dir", "{fresh}"), subprocess_signal=True, json=False),
    Case(("collect", "synth", "-o", "{fresh}.csv", "--sources", "3", "--days", "1")),
    Case(("collect", "publish", "-i", str(MILAN)), kafka=True),
    Case(("collect", "run", "--idle-exit", "1"), setup=telemetry, kafka=True),
    Case(("collect", "gnmi", "--duration", "2"), kafka=True,
         env=(("NMT_GNMI__TARGETS", '[{"name": "r1", "address": "127.0.0.1:9", "insecure": true}]'),)),
    Case(("collect", "gnmi"), kafka=True, error="no gNMI targets configured"),
    Case(("forecast", "backtest", "-i", str(MILAN), "--models", "snaive_daily,seasonal_mean", "--train-days", "14", "--horizon", "24")),
    Case(("forecast", "predict", "-i", str(MILAN), "--model", "seasonal_mean", "--horizon", "6")),
    Case(("forecast", "show", "-s", "10000", "--horizon", "4"), setup=stored_forecasts),
    Case(("forecast", "show", "-s", "no-such-series"), setup=stored_forecasts, error="no forecast for series"),
    Case(("forecast", "plot", "-s", "10000", "-o", "{fresh}.png"), setup=stored_forecasts),
    Case(("forecast", "list",), setup=stored_forecasts),
    Case(("forecast", "serve", "--idle-exit", "1"), setup=stored_forecasts, kafka=True),  # the store holds file series too
    Case(("forecast", "train-trend", "-i", str(MILAN), "--max-windows", "8", "--context-points", "24", "--chunk-points", "6"), llms=True,
         env=(("NMT_LLM__ADAPTERS_DIR", "{ws}/trend-adapters"),)),  # apart from the adapters the llm commands load
    Case(("forecast", "train-trend", "-i", str(MILAN)), error="nmt llm build"),
    Case(("policy", "list")),
    Case(("policy", "test", "-p", "bandwidth_reservation", "--context", "{ws}/context.json"), setup=policy_context),
    Case(("policy", "backtest", "--input", str(MILAN), "--warmup-days", "18", "--model", "seasonal_mean", "-v", "headroom=0.3")),
    Case(("policy", "backtest"), error="--synthetic-netgpt"),
    Case(("policy", "backtest", "--synthetic-netgpt", "--days", "9", "-v", "headrom=0.3"), error="no [policy] setting headrom"),
    Case(("policy", "backtest", "--synthetic-netgpt", "--days", "9", "--sites", "2", "--model", "ses",
          "--policies", "edge_autoscale,adapter_placement,edge_link_reservation", "-v", "edge_autoscale.prompts_per_replica=2")),
    Case(("decisions", "tail", "--wait", "1"), kafka=True),
    Case(("dead-letters", "tail", "--wait", "1"), kafka=True),
    Case(("dead-letters", "replay", "--all", "--dry-run", "--wait", "1"), kafka=True),
    Case(("dead-letters", "replay", "--wait", "1"), kafka=True, error="say which letters"),
    Case(("controller", "run", "--adapter", "kafka", "--rounds", "1", "--interval", "0.5", "--dry-run"), kafka=True),
    Case(("model", "init", "-o", "{fresh}", "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--corpus-scale", "0.01")),
    Case(("model", "finetune", "--base", "{edge}", "--task", "prompt_completion", "--data", "{ws}/completion/train.jsonl",
          "--adapter", "swept", "--epochs", "0.25", "--batch-size", "4", "--registry", "{fresh}"), setup=completion_data, llms=True),
    Case(("model", "adapters", "--registry", "{ws}/adapters"), setup=adapter, llms=True),
    Case(("llm", "dataset", "-o", "{fresh}", "--train", "16", "--test", "4")),
    Case(("llm", "build", "--size", "tiny", "-o", "{fresh}")),
    Case(("llm", "classify", "call grandma on facetime", "download the patch"), llms=True),
    Case(("llm", "fetch",)),  # the checkpoint `make test` fetched: found in the model cache
    Case(("llm", "fetch", "--model", "gpt-5"), error="choose one of"),
    Case(("llm", "build", "--size", "huge", "-o", "{fresh}"), error="choose one of"),
    Case(("llm", "complete", "find a pharmacy near me", "--location", "{cell}"), llms=True),
    Case(("llm", "complete", "find a pharmacy near me", "--location", "MI-0000"), error="nmt model init"),
    Case(("llm", "evaluate", "--data", "{ws}/completion/test.jsonl", "--limit", "2"), setup=completion_data, llms=True,
         env=(("NMT_LLM__CONTEXT_STORE", "{ws}/completion/context.json"),)),
    Case(("llm", "profile", "--requests", "4", "--batch", "2"), llms=True),
    Case(("llm", "serve", "--idle-exit", "0.5"), llms=True),
    Case(("llm", "cloud", "--idle-exit", "0.5"), llms=True),
    Case(("llm", "supervise", "--idle-exit", "0.5"), llms=True, env=(("NMT_LLM__INITIAL_REPLICAS", "0"),)),
    Case(("llm", "supervise", "--cloud", "--idle-exit", "0.5"), llms=True, env=(("NMT_LLM__INITIAL_REPLICAS", "0"),)),
    Case(("llm", "ask", "coffee near me", "--location", "{cell}"), llms=True, error="NMT_BUS__KIND=kafka"),
    Case(("intent", "parse", "block youtube for students from 4pm to 6pm")),
    Case(("intent", "parse", "limit netflix to 5 gbps in the dorms", "--model", "{fresh}"), error="nmt intent train"),
    Case(("intent", "train", "-i", str(INTENTS), "-o", "{fresh}", "--method", "sklearn")),
    Case(("intent", "eval", "-i", str(INTENTS), "--folds", "2", "--method", "sklearn,spanlr")),
    Case(("intent", "serve", "--idle-exit", "1"), kafka=True),
    Case(("intent", "submit", "block youtube for students", "--tenant", "campus"), kafka=True),
    Case(("intent", "retract", "op-none", "--wait", "1"), kafka=True),
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("sweep")
    env = {"NMT_STATE_DIR": str(root / "state"), "COLUMNS": "80", "OMP_NUM_THREADS": "1", "NMT_BUS__KIND": "embedded"}
    return Workspace(root, env)


@pytest.fixture
def ws(workspace: Workspace, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The shared workspace, with Kafka and the tiny LLMs set up on first need."""
    monkeypatch.chdir(workspace.root)
    case: Case = request.node.callspec.params["case"]
    if case.kafka and not workspace.kafka_env:
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        tag = f"sweep-{uuid.uuid4().hex[:8]}"
        topics = ("telemetry", "dead_letter", "late", "series", "forecasts", "decisions", "prompts", "cloud_requests",
                  "cloud_status", "answers", "intents", "intent_results", "operator_intents")
        workspace.kafka_env = {
            "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
            **{f"NMT_TOPICS__{t.upper()}": f"{tag}.{t}" for t in topics},
            **{f"NMT_{s}__GROUP_ID": f"{tag}-{s.lower()}" for s in ("COLLECTOR", "FORECAST_SERVICE", "CONTROLLER", "INTENT")},
            **{f"NMT_{s}__DEAD_LETTER_TOPIC": f"{tag}.{s.lower()}.dlq" for s in ("FORECAST_SERVICE", "CONTROLLER", "INTENT")},
            "NMT_INTENT__DEMAND_TOPIC": f"{tag}.demand",
        }
    if case.llms and not workspace.llm_env:
        models: Path = request.getfixturevalue("tiny_llms")
        workspace.llm_env = {
            "NMT_LLM__EDGE_MODEL": str(models / "edge"), "NMT_LLM__CLOUD_MODEL": str(models / "cloud"),
            "NMT_LLM__CONTEXT_STORE": str(models / "context.json"), "NMT_LLM__MAX_NEW_TOKENS": "4",
        }
    return workspace


def args_of(case: Case, ws: Workspace) -> list[str]:
    fresh = str(ws.fresh())
    fill = {"{ws}": str(ws.root), "{fresh}": fresh, "{edge}": ws.llm_env.get("NMT_LLM__EDGE_MODEL", "")}
    if "{cell}" in case.argv:
        cells = json.loads(Path(ws.llm_env["NMT_LLM__CONTEXT_STORE"]).read_text())["cells"]
        fill["{cell}"] = cells[0]["cell"]
    out = []
    for arg in case.argv:
        for key, value in fill.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def env_of(case: Case, ws: Workspace) -> dict[str, str]:
    own = {key: value.replace("{ws}", str(ws.root)) for key, value in case.env}
    return {**(ws.kafka_env if case.kafka else {}), **(ws.llm_env if case.llms else {}), **own}


def check_user_error(case: Case, code: int, out: str, err: str, exc: BaseException | None) -> None:
    """The run ended in an error a person can fix: one line, saying how (as ``nmt`` prints it)."""
    if isinstance(exc, UserError):
        message = str(exc)
    else:
        assert code != 0 and (exc is None or isinstance(exc, SystemExit)), f"unexpected {exc!r}\n{out}\n{err}"
        message = err.strip()
    assert "Traceback" not in out + err, out + err
    assert "\n" not in message.strip() and FIX.search(message), f"not a one-line error with the fix: {message!r}"
    if case.error:
        assert case.error in message, message


def check_ok(args: list[str], code: int, out: str, err: str, exc: BaseException | None) -> None:
    if isinstance(exc, UserError):
        pytest.fail(f"nmt {' '.join(args)}: error: {exc}")
    assert exc is None or (isinstance(exc, SystemExit) and code == 0), f"nmt {' '.join(args)}: {exc!r}\n{out}\n{err}"
    assert code == 0, f"nmt {' '.join(args)}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err, out + err


def run_until_up(args: list[str], env: dict[str, str], ready: str, timeout_s: float = 120.0) -> tuple[int, str]:
    """Start ``nmt args`` as a process, wait for ``ready`` in its output, interrupt it (Ctrl-C)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nm_toolkit.cli import main; main()", *args], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=timeout_s)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines)


@pytest.mark.parametrize("case", SWEEP, ids=[c.id for c in SWEEP])
def test_human(case: Case, ws: Workspace) -> None:
    if case.setup:
        case.setup(ws)
    args = args_of(case, ws)
    if case.subprocess_signal:
        code, out = run_until_up(args, {**ws.env, **env_of(case, ws)}, "export NMT_BUS__KIND=kafka")
        assert code == 0 and "Traceback" not in out and "…" not in out, out
        return
    code, out, err, exc = invoke(ws, args, env_of(case, ws))
    if case.error:
        check_user_error(case, code, out, err, exc)
        return
    check_ok(args, code, out, err, exc)
    assert out.strip(), f"nmt {' '.join(args)} printed nothing"
    assert "…" not in out, f"a table cut a value short at 80 columns:\n{out}"
    assert not out.lstrip().startswith(("{", "[")), f"human form printed JSON:\n{out}"


@pytest.mark.parametrize("case", [c for c in SWEEP if c.json], ids=[c.id for c in SWEEP if c.json])
def test_json(case: Case, ws: Workspace) -> None:
    if case.setup:
        case.setup(ws)
    args = [*args_of(case, ws), "--json"]
    code, out, err, exc = invoke(ws, args, env_of(case, ws))
    if case.error:
        check_user_error(case, code, out, err, exc)
        return
    check_ok(args, code, out, err, exc)
    try:
        json.loads(out)
    except json.JSONDecodeError as e:
        pytest.fail(f"nmt {' '.join(args)}: stdout is not one JSON document ({e}):\n{out}")


def registered_commands() -> Iterator[tuple[str, ...]]:
    def name_of(command: object) -> str:
        return command.name or command.callback.__name__.replace("_", "-")  # type: ignore[attr-defined]

    for command in app.registered_commands:
        yield (name_of(command),)
    for group in app.registered_groups:
        for command in group.typer_instance.registered_commands:  # type: ignore[union-attr]
            yield (group.name, name_of(command))  # type: ignore[misc]


def test_every_command_is_swept() -> None:
    swept = {case.argv[: len(cmd)] for case in SWEEP for cmd in registered_commands()}
    missing = [" ".join(cmd) for cmd in registered_commands() if cmd not in swept]
    assert not missing, f"add these commands to SWEEP in {Path(__file__).name}: {', '.join(missing)}"


def test_intent_parse_without_a_model_trains_the_builtin_extractor_once(ws_plain: Workspace) -> None:
    text = "block youtube for students from 4pm to 6pm"
    cache = ws_plain.root / "cache-builtin"  # the built-in extractor is cached for the machine
    env = {"XDG_CACHE_HOME": str(cache)}
    code, out, err, exc = invoke(ws_plain, ["intent", "parse", text], env)
    check_ok(["intent", "parse"], code, out, err, exc)
    assert "first use: training the built-in intent extractor" in err and "youtube" in out
    assert (cache / "nm-toolkit" / "intent-extractor").is_dir()
    code, out, err, exc = invoke(ws_plain, ["intent", "parse", text, "--json"], env)
    check_ok(["intent", "parse"], code, out, err, exc)
    assert "first use" not in err and "youtube" in json.loads(out)["service"]


@pytest.fixture
def ws_plain(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(workspace.root)
    return workspace


def test_wide_tables_fold_instead_of_cutting_at_80_columns() -> None:
    from rich.console import Console

    rows = [
        {"series_id": f"MI-{i:04d}-sector-{i}|traffic.downlink.bytes", "model": "mean(gbm,seasonal_mean,snaive_weekly)",
         "start": "2013-11-22T00:00:00+00:00", "horizon": 24, "peak": 1234.5678, "note": "fallback: too little history"}
        for i in range(3)
    ]
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table("forecasts", rows))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    body = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    column = {name: "".join(cells[j].strip() for cells in body) for j, name in enumerate(rows[0])}
    assert column["series_id"] == "".join(row["series_id"] for row in rows), text
    assert column["model"] == "mean(gbm,seasonal_mean,snaive_weekly)" * 3, text
    assert column["peak"] == "1,235" * 3, text
