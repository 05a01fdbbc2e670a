"""``nmt policy``: which policies are installed, and what one decides on a given context."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nm_toolkit.cli.common import ConfigOption, settings_from
from nm_toolkit.cli.output import JsonOption, console, emit, print_json, table
from nm_toolkit.errors import UserError

# pydantic, the schemas, the settings and the policies are imported by the commands, not by every
# `nmt` start (which builds this module): ContextFile is built on first use.
if TYPE_CHECKING:
    from pydantic import BaseModel

app = typer.Typer(help="Policies: list the installed ones, try one on a context file.", no_args_is_help=True)


@cache
def context_file_model() -> type[BaseModel]:
    """``ContextFile``: the JSON a ``nmt policy test --context`` file holds; every field is optional."""
    from pydantic import BaseModel, ConfigDict, Field

    from nm_toolkit.schemas import Forecast, UtcDatetime
    from policies.intents import NetworkIntent

    class ContextFile(BaseModel):
        """The JSON a ``nmt policy test --context`` file holds; every field is optional."""

        model_config = ConfigDict(extra="forbid")

        now: UtcDatetime = Field(default_factory=lambda: datetime.now(UTC))
        forecasts: list[Forecast] = Field(default_factory=list)
        capacities: dict[str, float] = Field(default_factory=dict)
        intents: list[NetworkIntent] = Field(default_factory=list)
        adapter_popularity: dict[str, dict[str, float]] = Field(default_factory=dict)

    ContextFile.__module__, ContextFile.__qualname__ = __name__, "ContextFile"
    return ContextFile


def __getattr__(name: str) -> Any:
    if name == "ContextFile":
        return context_file_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ContextFileError(UserError):
    """The context file is missing or not a valid context."""


def read_context_file(path: Path) -> Any:
    """The context file as a ``ContextFile``."""
    from pydantic import ValidationError

    if not path.is_file():
        raise ContextFileError(f"context file {path} does not exist: pass a JSON file (see `nmt policy test --help`)")
    try:
        return context_file_model().model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContextFileError(f"{path}: {where}: {first['msg']} (fix the context file)") from exc


@app.command("list")
def list_policies(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Every policy installed through the ``nm_toolkit.policies`` entry point, and which run."""
    from policies.registry import available_policies

    settings = settings_from(config)
    enabled = settings.policy.enabled
    rows = [
        {"name": name, "object": target, "enabled": name in enabled,
         "order": enabled.index(name) + 1 if name in enabled else None}
        for name, target in sorted(available_policies().items())
    ]
    shown = [row | {"enabled": "yes" if row["enabled"] else "no"} for row in rows]
    emit(as_json, rows, "installed policies", shown)


@app.command("test")
def test_policy(
    policy: str = typer.Option(..., "--policy", "-p", help="policy name (see `nmt policy list`)"),
    context: Path = typer.Option(..., "--context", help="JSON context: forecasts, capacities, intents, adapter_popularity"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Run one policy on a context file and check its decisions against the guardrails.
    Nothing is applied: this is a dry run by construction."""
    from nm_toolkit.schemas import DecisionAdapter
    from policies import PolicyContext, load_policies
    from policies.guardrails import Guardrails, llm_actuators
    from policies.registry import evaluate_policy

    settings = settings_from(config)
    data = read_context_file(context)
    loaded = load_policies([policy], settings.controller.policy_params)
    if not loaded:
        raise UserError(f"policy {policy!r} is installed but its code failed to import (see the log): fix or reinstall its package")
    ctx = PolicyContext(
        now=data.now, settings=settings.policy, forecasts={f.series_id: f for f in data.forecasts},
        capacities=data.capacities, intents=data.intents, adapter_popularity=data.adapter_popularity,
    )
    run = evaluate_policy(loaded[0], ctx, settings.controller.policy_time_budget_seconds)
    report = Guardrails(settings.controller.guardrails, ctx.capacity_of, actuators=llm_actuators(settings)).check(run.decisions)
    verdicts = {r.decision.id: f"rejected ({r.rule}): {r.reason}" for r in report.rejected}
    rows = [
        {"kind": d.kind, "target": d.target, "priority": d.priority, "ttl_s": d.ttl_seconds,
         "guardrails": verdicts.get(d.id, "accepted"), "reason": d.reason}
        for d in run.decisions
    ]
    if as_json:
        print_json({
            "policy": run.policy, "status": run.status, "elapsed_s": run.elapsed_s, "error": run.error,
            "decisions": [
                {"decision": DecisionAdapter.dump_python(d, mode="json"), "guardrails": verdicts.get(d.id, "accepted")}
                for d in run.decisions
            ],
        })
        return
    console.print(f"policy [bold]{run.policy}[/]: {run.status} in {run.elapsed_s * 1000:.1f} ms {run.error}")
    if rows:
        console.print(table("decisions (dry run)", rows))


@app.command("backtest")
def backtest_policies(
    input: Path | None = typer.Option(None, "--input", "-i", help="trace to replay: wide or long CSV (columns SOURCE|METRIC, or sources with --metric)"),
    synthetic_netgpt: bool = typer.Option(False, "--synthetic-netgpt", help="replay a synthetic NetGPT load trace instead (edge sites' prompts, demand, escalations)"),
    metric: str = typer.Option("traffic", help="metric of CSV columns that are not SOURCE|METRIC"),
    policies: str | None = typer.Option(None, help="comma-separated policies to replay (default: policy.enabled)"),
    variant: list[str] = typer.Option([], "--variant", "-v", help="a setting to compare, e.g. headroom=0.3 or edge_autoscale.prompts_per_replica=4 (repeat)"),
    model: str | None = typer.Option(None, help="forecasting model (default: forecast_service.model)"),
    warmup_days: float = typer.Option(7.0, help="days of history before the first decision"),
    every: int = typer.Option(1, help="steps between decision rounds"),
    refit_every: int = typer.Option(24, help="rounds between full refits of the forecaster (update() in between)"),
    capacity_factor: float = typer.Option(1.15, help="capacity of a target without a configured one: this x its busiest warm-up value"),
    days: int = typer.Option(14, help="days of the synthetic trace"),
    sites: int = typer.Option(6, help="edge sites of the synthetic trace"),
    seed: int = typer.Option(0, help="seed of the synthetic trace"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Replay a trace through forecasting, policies and guardrails (dry run) and score the decisions
    against what came next, for each --variant next to no decisions at all."""
    from rich.progress import Progress

    from collectors.synthetic import SyntheticNetgptLoad
    from collectors.tabular import load_wide_frame
    from policies.registry import load_policies
    from policies.whatif import NO_DECISIONS, Variant, baseline, default_capacities, replay, score_replay, step_seconds_of, whatif_origins

    settings = settings_from(config)
    if (input is None) == (not synthetic_netgpt):
        raise UserError("pass exactly one of --input TRACE.csv and --synthetic-netgpt")
    if input is not None:
        frame = load_wide_frame(input)
        frame.columns = [c if "|" in str(c) else f"{c}|{metric}" for c in frame.columns]
        trace = str(input)
    else:
        load = SyntheticNetgptLoad(n_sites=sites, periods=days * 24, seed=seed)
        frame = load.frame()
        trace = f"synthetic NetGPT load, {sites} sites, {days} days, seed {seed}"
        settings = settings.model_copy(update={"policy": settings.policy.model_copy(update=load.policy_world())})
    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else list(settings.policy.enabled)
    variants = [Variant.parse(v) for v in variant] or [Variant.parse("")]
    step = step_seconds_of(frame)
    origins = whatif_origins(len(frame), round(warmup_days * 86400 / step), every)
    loaded = load_policies(names, settings.controller.policy_params)
    capacities = default_capacities(frame.iloc[: origins[0]], loaded, capacity_factor) | dict(settings.policy.capacities)
    with Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying", total=len(origins))
        replays = replay(
            frame, settings, variants, policy_names=names, model=model or settings.forecast_service.model,
            origins=origins, capacities=capacities, refit_every=refit_every,
            on_origin=lambda k: progress.update(task, completed=k + 1),
        )  # fmt: skip
    # at risk: above the configured reserve_share of capacity, the same yardstick for every variant
    share = settings.policy.reserve_share
    rows = [{"variant": NO_DECISIONS, **score_replay(frame, origins, baseline(replays[0]), capacities, share)}]
    rows += [{"variant": r.variant.name, **score_replay(frame, origins, r, capacities, share)} for r in replays]
    if as_json:
        print_json({
            "trace": trace, "series": frame.shape[1], "step_seconds": step, "origins": len(origins),
            "first_origin": frame.index[origins[0]].isoformat(), "policies": names,
            "model": model or settings.forecast_service.model, "variants": rows,
        })  # fmt: skip
        return
    console.print(f"{trace}: {frame.shape[1]} series, {len(origins)} decision rounds from {frame.index[origins[0]]}, policies {', '.join(names)}")
    # one column per variant: the scores read down, the variants compare across
    shown = [
        {"score": key.replace("_", " "), **{row["variant"]: f"{row[key]:,.3f}".rstrip("0").rstrip(".") for row in rows}}
        for key in rows[0] if key != "variant"
    ]
    console.print(table("policy what-if (dry run): scores against the trace", shown))
