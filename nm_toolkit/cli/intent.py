"""``nmt intent``: parse operator intents, train extractors, and score them on Nile-format data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from intent.methods import BEST_METHOD, METHODS
from nm_toolkit.cli.common import (
    ConfigOption,
    MetricsPortOption,
    run_service,
    settings_from,
    shared_bus_settings,
    stop_on_signals,
)
from nm_toolkit.cli.output import JsonOption, console, emit, err_console
from nm_toolkit.errors import UserError

if TYPE_CHECKING:
    from intent.service import OperatorMessage
    from nm_toolkit.bus import Bus
    from nm_toolkit.config import Settings

app = typer.Typer(help="Intents: parse operator intents to Nile, train and evaluate the extractors, serve the prompt and operator-intent streams.", no_args_is_help=True)


BaseModelOption = typer.Option(
    None, "--base-model", help="llm method: start every fold from this `nmt model init` checkpoint instead of pre-training one per fit"
)


def _checked(base_model: Path | None) -> Path | None:
    if base_model is not None and not (base_model / "config.json").is_file():
        raise UserError(f"--base-model {base_model} is not a model checkpoint: build one with `nmt model init -o {base_model}`")
    return base_model


@app.command()
def parse(
    text: str = typer.Argument(..., help="the operator's intent in natural language"),
    model: Path | None = typer.Option(
        None, "--model", "-m",
        help="directory written by `nmt intent train` (default: intent.extractor_dir, else the built-in extractor, trained on first use)",
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Extract the intent's entities, validate them, and compile the intent to Nile."""
    from intent.methods import load, parse_operator_intents
    from intent.nile import compile_nile

    if model is not None:
        if not model.is_dir():
            raise UserError(f"--model {model} is not a directory: train one with `nmt intent train --input NILE_INTENTS.json -o {model}`")
        extractor = load(model)
    else:
        from intent.service import load_extractor

        extractor = load_extractor(settings_from(config), note=lambda line: err_console.print(f"[yellow]{line}[/]"))
    result = parse_operator_intents(extractor, [text])[0]
    data = result.model_dump()
    if result.kind == "operator":
        data["nile"] = compile_nile(result)  # type: ignore[arg-type]
    rows = [{"field": k, "value": v if not isinstance(v, list) else ", ".join(map(str, v))} for k, v in data.items() if v not in (None, [])]
    emit(as_json, data, "intent", rows)


@app.command()
def train(
    input: Path = typer.Option(..., "--input", "-i", help="Nile-format labelled intents (JSON)"),
    output: Path = typer.Option(..., "-o", "--output", help="directory for the trained extractor"),
    method: str = typer.Option(BEST_METHOD, help=f"one of {', '.join(METHODS)}"),
    base_model: Path | None = BaseModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Fit an extractor on every intent of the file and save it."""
    from intent.data import load_intents
    from intent.methods import factory

    intents = load_intents(input)
    extractor = factory(method, _checked(base_model))().fit(intents)
    extractor.save_pretrained(output)  # type: ignore[attr-defined]
    emit(as_json, {"method": method, "intents": len(intents), "output": str(output)}, "trained")


@app.command("eval")
def evaluate(
    input: Path | None = typer.Option(None, "--input", "-i", help="Nile-format file to cross-validate on"),
    folds: int = typer.Option(5, help="number of cross-validation folds"),
    train_file: Path | None = typer.Option(None, "--train", help="train on this file (with --test)"),
    test_file: Path | None = typer.Option(None, "--test", help="score on this file (with --train)"),
    method: str = typer.Option(BEST_METHOD, help=f"one of {', '.join(METHODS)}, or a comma-separated list to compare side by side"),
    seed: int = typer.Option(0, help="seed of the fold split"),
    split: str = typer.Option(
        "random", help="random: shuffled folds; grouped: clusters of sentences with shared words stay on one side (a proxy for unseen "
        "phrasings); skeleton: sentences with the same entity types in order stay on one side"
    ),
    base_model: Path | None = BaseModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Entity-level precision/recall/F1 per type and micro-averaged, plus whole-intent exact match."""
    from rich.progress import Progress

    from intent.data import load_intents
    from intent.evaluation import SPLITS, cross_validate, train_test
    from intent.methods import factory

    if (input is None) == (train_file is None or test_file is None):
        raise UserError("pass either --input FILE (cross-validation) or both --train FILE and --test FILE")
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    makers = {m: factory(m, _checked(base_model)) for m in methods}
    reports: dict[str, dict[str, object]] = {}
    with Progress(console=console, transient=True, disable=as_json) as progress:
        for name, make in makers.items():
            if input is not None:
                intents = load_intents(input)
                task = progress.add_task(f"{name}: {folds}-fold cross-validation ({split})", total=folds)
                reports[name] = cross_validate(make, intents, folds, seed, on_fold=lambda _k, t=task: progress.advance(t), split=split)
            else:
                assert train_file is not None and test_file is not None
                progress.add_task(f"{name}: train/test", total=None)
                reports[name] = train_test(make, load_intents(train_file), load_intents(test_file))
    best = max(reports, key=lambda m: reports[m]["micro"]["f1"])  # type: ignore[index]
    if as_json:
        emit(True, {"methods": reports, "best": best}, "")
        return
    emit(False, reports, "entity-level scores (type and span text must match; an abstained span counts as a miss)", score_rows(reports))
    for name, report in reports.items():
        if causes := report.get("missed_by_cause"):
            console.print(f"{name} missed: " + ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in causes.items()))  # type: ignore[union-attr]
    console.print(f"best: {best} (micro-F1 {reports[best]['micro']['f1']:.3f})")  # type: ignore[index]


def score_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure, one column per method: micro-F1 first, then each type's F1 (with its
    support), then what abstaining leaves and what it all costs."""
    figures: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("micro-F1", lambda r: r["micro"]["f1"]), ("micro precision", lambda r: r["micro"]["precision"]),
        ("micro recall", lambda r: r["micro"]["recall"]), ("macro-F1", lambda r: r["macro"]["f1"]),
    ]  # fmt: skip
    for kind in sorted({k for r in reports.values() for k in r["per_type"]}):
        support = max(r["per_type"].get(kind, {}).get("support", 0) for r in reports.values())
        figures.append((f"F1 {kind} ({support})", lambda r, k=kind: r["per_type"].get(k, {}).get("f1")))
    figures += [
        ("abstain rate", lambda r: r["abstain_rate"]), ("precision not abstained", lambda r: r["answered_precision"]),
        ("exact match", lambda r: r["exact_match"]), ("compiles to an intent", lambda r: r["compiled_rate"]),
        ("intent from a sentence with none", lambda r: r["false_intent_rate"]), ("ms per sentence", lambda r: r["predict_ms_per_intent"]),
        ("fit s", lambda r: r["fit_seconds"]),
    ]  # fmt: skip
    return [{"figure": label, **{name: pick(report) for name, report in reports.items()}} for label, pick in figures]


WaitOption = typer.Option(0.0, "--wait", help="seconds to wait for the intent service's answer (0: do not wait)")


@app.command()
def submit(
    text: str = typer.Argument(..., help="the operator's intent in natural language"),
    tenant: str | None = typer.Option(None, help="whose intent it is (default: intent.default_tenant)"),
    request_id: str | None = typer.Option(None, "--request-id", help="id of the request (default: a new one)"),
    wait: float = WaitOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Publish an operator intent to the running system's operator-intents topic and print its
    request id; `nmt intent serve` answers it on the intent-results topic under that id (with
    --wait, shown here: accepted, conflicting, duplicate or needing clarification)."""
    import uuid

    from pydantic import ValidationError

    from intent.service import OperatorMessage
    from nm_toolkit.errors import validation_reason

    settings = shared_bus_settings(config, "nmt intent submit")
    if not text.strip():
        raise UserError("the intent text is empty: pass what the network should do, e.g. 'block netflix for guests'")
    try:
        message = OperatorMessage(request_id=request_id or f"op-{uuid.uuid4().hex[:12]}", text=text, tenant=tenant)
    except ValidationError as exc:
        raise UserError(f"cannot submit this intent ({validation_reason(exc, limit=1)}): pass a shorter --request-id or --tenant") from exc
    _operator_request(settings, message, wait, as_json, "submitted")


@app.command()
def retract(
    request_id: str = typer.Argument(..., help="the request id of an accepted intent (as `submit` printed it)"),
    tenant: str | None = typer.Option(None, help="the tenant it was submitted for (default: intent.default_tenant)"),
    wait: float = WaitOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Take an accepted intent out of force: the intent service puts a tombstone in the intents
    table and the decision stage withdraws what carried it out at its next round."""
    from intent.service import OperatorMessage

    settings = shared_bus_settings(config, "nmt intent retract")
    _operator_request(settings, OperatorMessage(request_id=request_id, tenant=tenant, retract=True), wait, as_json, "retraction sent")


def _operator_request(settings: Settings, message: OperatorMessage, wait: float, as_json: bool, what: str) -> None:
    """Publish ``message`` on the operator-intents topic (keyed by tenant: one tenant's intents in
    one partition, each checked against those accepted before it) and, with ``wait``, show the
    service's answer under its request id."""
    from intent.service import IntentRecord
    from nm_toolkit.bus import bus_from_settings

    topic = settings.topics.operator_intents
    bus = bus_from_settings(settings)
    bus.create_topics([topic, settings.topics.intent_results])
    producer = bus.producer()
    try:
        producer.send(topic, message.model_dump_json(exclude_none=True, exclude_defaults=True).encode(), (message.tenant or settings.intent.default_tenant).encode())
        producer.flush()
    finally:
        producer.close()
    row: dict[str, object] = {"request_id": message.request_id, "topic": topic, "tenant": message.tenant}
    if wait > 0:
        # a retraction's answer is the "retracted" record: the intent's earlier answers share its id
        answer = _answer_of(bus, settings.topics.intent_results, message.request_id, wait, b'"status":"retracted"' if message.retract else b"")
        if answer is None:
            row["status"] = f"no answer in {wait:g} s: is `nmt intent serve` running?"
        else:
            record = IntentRecord.model_validate_json(answer)
            row |= {"status": record.status, "nile": record.nile, "duplicate_of": record.duplicate_of,
                    "conflicts": [c.request_id for c in record.conflicts],
                    "reason": getattr(record.intent, "reason", None)}  # fmt: skip
    bus.close()
    emit(as_json, row, f"{what} to {topic}")


def _answer_of(bus: Bus, topic: str, request_id: str, wait: float, marker: bytes = b"") -> bytes | None:
    """The latest answer keyed ``request_id`` (and containing ``marker``) on ``topic`` within
    ``wait`` seconds (a throw-away group reads the topic; nobody's offsets move)."""
    import time
    import uuid

    bus.create_topics([topic])
    consumer = bus.consumer([topic], f"nmt-intent-wait-{uuid.uuid4().hex[:8]}")
    found: bytes | None = None
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            for message in consumer.poll(1000, 0.5):
                if message.key == request_id.encode() and marker in message.value:
                    found = message.value
            if found is not None and not consumer.poll(1000, 0.5):
                return found
    finally:
        consumer.close()
    return found


@app.command()
def serve(
    max_records: int | None = typer.Option(None, min=1, help="stop after handling this many prompt and operator messages"),
    idle_exit: float | None = typer.Option(None, min=0.1, help="stop after this many seconds without messages"),
    metrics_port: int | None = MetricsPortOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Serve the operator-intents topic until Ctrl-C (and the prompts topic with
    intent.user_demand = keywords): answers, network intents and demand series out."""
    from intent.service import intent_runners
    from nm_toolkit.bus import bus_from_settings

    settings = shared_bus_settings(config, "nmt intent serve")
    bus = bus_from_settings(settings)
    runners = intent_runners(settings, bus)  # a missing extractor fails here, with the fix
    if not as_json:
        topics = settings.topics
        prompts = (
            f"{topics.prompts} (by keyword rules)" if settings.intent.user_demand == "keywords"
            else f"the edge service's demand on {settings.intent.demand_topic} (prompts are the edge's: intent.user_demand = edge)"
        )  # fmt: skip
        console.print(
            f"serving {topics.operator_intents} + {prompts} -> {topics.intent_results}, "
            f"network intents -> {topics.intents}, demand series -> {topics.series} (Ctrl-C stops)"
        )
    run_service(runners.runners, settings, stop_on_signals(), idle_exit_s=idle_exit, max_messages=max_records, metrics_port=metrics_port)
    counts = runners.stats_dict()
    emit(as_json, counts, "intent service", [{"counter": k, "value": v} for k, v in counts.items()])
