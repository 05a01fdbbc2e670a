"""Policy what-if: replay a trace through forecasting, policies and guardrails, and score the
decisions against what happened next.

An operator compares policy settings before switching one on. :func:`replay` walks a recorded or
synthetic trace (a wide frame, one column per ``SOURCE|METRIC`` series) origin by origin: the
forecaster sees only the history before the origin (fitted on a schedule, advanced with
``update()`` in between), every settings variant's policies decide on those forecasts, and the
decisions pass the same :class:`~nm_toolkit.controller.service.DecisionController` and guardrails
as in the live controller, on the trace's clock, into an actuator that only records them. Nothing
reaches a switch or a service: a what-if is a dry run by construction.

Scoring (:func:`score_replay`, pure): the decisions made at an origin are in force until the next
one, and are scored against the trace over that span:

* reservations (:class:`~policies.bandwidth.BandwidthReservationPolicy` and its edge->cloud link
  variant): a step is *at risk* when the demand on a covered series exceeds ``reserve_share`` of
  its target's capacity (more than a source gets without a reservation); *overload hours avoided*
  are at-risk hours a reservation covered, *missed* the rest; *reserved unused* is the share of
  reserved capacity-hours no traffic used;
* edge autoscaling: *compute overload hours* are site-hours whose prompt rate exceeded replicas x
  ``prompts_per_replica`` (the policy's figure of what a replica serves, so compare variants of
  its headroom and bounds, not of that figure); *replica hours* are the cost;
* adapter placement: requests (``SITE|demand.<class>.requests``, ``SITE|adapter.<name>.requests``) whose adapter was placed at their
  site are *cloud calls saved* (the cloud holds every adapter; the edge only the placed ones), the
  others *adapter misses*.

Without a decision in force a site runs ``llm.initial_replicas`` and holds no adapter; the row
"no decisions" scores exactly that, next to the variants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecasting.backtest import rolling_origins
from forecasting.history import infer_step
from forecasting.registry import make_model
from forecasting.service import fill_event_gaps, forecast_message
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter, Outcome
from nm_toolkit.controller.service import DecisionController
from nm_toolkit.errors import UserError, validation_reason
from nm_toolkit.schemas import Decision, PlaceAdapter, Reservation, ScaleCompute, split_series_key
from policies.adapter_placement import AdapterPlacementPolicy
from policies.autoscale import EdgeAutoscalePolicy, site_load
from policies.bandwidth import BandwidthReservationPolicy
from policies.base import Policy, capacity_of, serving_site
from policies.registry import load_policies

NO_DECISIONS = "no decisions"


class VariantError(UserError):
    """A ``--variant`` that is not ``key=value[,key=value...]`` over known settings."""


@dataclass(frozen=True)
class Variant:
    """One policy setting to try: overrides of ``[policy]`` settings (``headroom=0.3``) and of
    policy parameters (``edge_autoscale.prompts_per_replica=4``)."""

    name: str
    policy: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"headroom=0.3,edge_autoscale.prompts_per_replica=4"`` (values are read as JSON, else as text)."""
        import json

        policy: dict[str, Any] = {}
        params: dict[str, dict[str, Any]] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise VariantError(f"variant item {item!r} is not key=value: write e.g. --variant headroom=0.3")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            name, dot, param = key.partition(".")
            if dot:
                params.setdefault(name, {})[param] = value
            else:
                policy[key] = value
        return cls(text or "configured", policy, params)

    def settings(self, base: Settings) -> Settings:
        """``base`` with this variant's ``[policy]`` overrides and policy parameters, validated as
        the settings file is."""
        from pydantic import ValidationError

        unknown = sorted(set(self.policy) - set(type(base.policy).model_fields))
        if unknown:
            raise VariantError(f"variant {self.name!r}: no [policy] setting {', '.join(unknown)} (see `nmt policy backtest --help`)")
        try:
            policy = type(base.policy).model_validate(base.policy.model_dump() | self.policy)
        except ValidationError as exc:
            raise VariantError(f"variant {self.name!r}: {validation_reason(exc, limit=1)}") from exc
        params = {name: dict(values) for name, values in base.controller.policy_params.items()}
        for name, values in self.params.items():
            params[name] = params.get(name, {}) | values
        controller = base.controller.model_copy(update={"policy_params": params})
        return base.model_copy(update={"policy": policy, "controller": controller})


class WhatIfActuator(ControllerAdapter):
    """Carries nothing out and reports every decision applied, so that the controller keeps them in
    force (for the guardrails' refresh and conflict rules) as it would live."""

    name = "what-if"

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        return [Outcome(d.idempotency_key, d.kind, "applied") for d in decisions]


@dataclass
class VariantReplay:
    """What one variant decided: accepted decisions per origin, and guardrail rejections."""

    variant: Variant
    policies: list[Policy]
    settings: Settings
    decisions: dict[int, list[Decision]] = field(default_factory=dict)
    rejected: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def step_seconds_of(frame: pd.DataFrame) -> int:
    """The trace's sampling step in seconds (a one-line error for a trace too short to have one)."""
    try:
        return int(infer_step(pd.DatetimeIndex(frame.index)).total_seconds())
    except ValueError as exc:
        raise UserError("the trace needs at least two time steps: pass a longer trace") from exc


def default_capacities(frame: pd.DataFrame, policies: Sequence[Policy], factor: float) -> dict[str, float]:
    """Capacity of each reservation target: ``factor`` x the busiest value of its series in ``frame``
    (the history before the first origin), in the reservation's unit."""
    step = step_seconds_of(frame)
    capacities: dict[str, float] = {}
    for policy in policies:
        if not isinstance(policy, BandwidthReservationPolicy):
            continue
        by_target: dict[str, dict[str, np.ndarray]] = {}
        for series_id in frame.columns:
            if policy.covers(series_id) and np.isfinite(frame[series_id]).any():
                values = frame[series_id].to_numpy(dtype=float) * policy.units_per_value(step)
                by_target.setdefault(policy.target_of(split_series_key(series_id)[0]), {})[series_id] = values
        for target, series in by_target.items():  # the target's load as the policy reckons it (classes add up, say)
            peak = float(np.nanmax(policy.peak_of(series)))
            capacities[target] = max(capacities.get(target, 0.0), round(factor * peak, 6))
    return {target: capacity for target, capacity in capacities.items() if capacity > 0}


def replay(
    frame: pd.DataFrame,
    settings: Settings,
    variants: Sequence[Variant],
    *,
    policy_names: Sequence[str],
    model: str,
    origins: Sequence[int],
    capacities: Mapping[str, float],
    refit_every: int = 24,
    on_origin: Callable[[int], None] = lambda _: None,
) -> list[VariantReplay]:
    """Forecast from every origin (history before it only) and let every variant decide."""
    step = step_seconds_of(frame)
    horizon, level = settings.forecast.horizon, settings.forecast.level
    frame = fill_event_gaps(frame.copy(), settings.forecast.zero_fill_metrics, started=None)  # as the live service does
    replays, controllers = [], []
    for variant in variants:
        configured = variant.settings(settings)
        policies = load_policies(list(policy_names), configured.controller.policy_params)
        replays.append(VariantReplay(variant, policies, configured))
        clock = _TraceClock()
        controllers.append((clock, DecisionController(configured, policies, [WhatIfActuator()], capacities, clock=clock)))
    forecaster = make_model(model, pd.Timedelta(seconds=step), settings)
    fitted = None
    previous = 0
    with _quiet(logging.getLogger(DecisionController.__module__)):  # rejections are counted, not warned per round
        for k, origin in enumerate(origins):
            history = frame.iloc[:origin]
            if fitted is None or k % refit_every == 0:
                fitted = forecaster.fit_many(history, horizon)
            else:
                fitted.update(frame.iloc[previous:origin])
            previous = origin
            now = frame.index[origin].to_pydatetime()
            forecasts = [forecast_message(s, fc, now, step) for s, fc in fitted.predict_many(horizon, level).items()]
            for record, (clock, controller) in zip(replays, controllers, strict=True):
                clock.now = now.timestamp()
                report = controller.decide(forecasts, now=now)
                record.decisions[origin] = list(report.guardrails.accepted)
                record.rejected += len(report.guardrails.rejected)
                for rejection in report.guardrails.rejected:
                    record.by_rule[rejection.rule] = record.by_rule.get(rejection.rule, 0) + 1
            on_origin(k)
    return replays


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger`` at ERROR for the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _TraceClock:
    """The controller's and the guardrails' clock: the trace's time at the current origin."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- scoring: pure functions of the trace and the decisions ---------------------------------------
def spans(origins: Sequence[int], n_steps: int) -> list[tuple[int, int]]:
    """The steps each origin's decisions are in force: until the next origin (the last: one gap)."""
    gap = origins[1] - origins[0] if len(origins) > 1 else 1
    ends = [*origins[1:], min(n_steps, origins[-1] + gap)]
    return list(zip(origins, ends, strict=True))


def score_reservations(
    frame: pd.DataFrame, origins: Sequence[int], decisions: Mapping[int, Sequence[Decision]],
    policies: Sequence[Policy], settings: Settings, capacities: Mapping[str, float], unreserved_share: float,
) -> dict[str, float]:  # fmt: skip
    """Overload hours avoided / missed and the share of reserved capacity-hours left unused.

    ``unreserved_share``: the share of its capacity a target carries without a reservation (the
    operator's network, the same for every variant, so that variants are scored on the same risk)."""
    step = step_seconds_of(frame)
    hours = step / 3600
    covered = [(p, s) for p in policies if isinstance(p, BandwidthReservationPolicy) for s in frame.columns if p.covers(s)]
    if not covered:
        return {}
    at_risk = avoided = reserved = unused = 0.0
    for start, end in spans(origins, len(frame)):
        in_force = {d.target: d.bandwidth for d in decisions.get(start, ()) if isinstance(d, Reservation)}
        for policy, series_id in covered:
            target = policy.target_of(split_series_key(series_id)[0])
            capacity = capacity_of(target, capacities, settings.policy)
            demand = frame[series_id].to_numpy(dtype=float)[start:end] * policy.units_per_value(step)
            demand = demand[np.isfinite(demand)]
            risky = demand > unreserved_share * capacity
            at_risk += risky.sum() * hours
            if target in in_force:
                bandwidth = in_force[target]
                avoided += (risky & (demand <= bandwidth)).sum() * hours
                reserved += bandwidth * len(demand) * hours
                unused += np.clip(bandwidth - demand, 0, None).sum() * hours
    return {
        "overload_hours_at_risk": at_risk,
        "overload_hours_avoided": avoided,
        "overload_hours_missed": at_risk - avoided,
        "reserved_unused_share": unused / reserved if reserved else 0.0,
    }


def score_autoscale(
    frame: pd.DataFrame, origins: Sequence[int], decisions: Mapping[int, Sequence[Decision]],
    policies: Sequence[Policy], settings: Settings,
) -> dict[str, float]:  # fmt: skip
    """Site-hours whose prompt rate exceeded what the replicas in force serve, and replica-hours."""
    scalers = [p for p in policies if isinstance(p, EdgeAutoscalePolicy)]
    if not scalers:
        return {}
    policy = scalers[0]
    step = step_seconds_of(frame)
    hours = step / 3600
    load = {
        series_id: scale * np.nan_to_num(frame[series_id].to_numpy(dtype=float))
        for series_id in frame.columns
        if (scale := policy.per_second(split_series_key(series_id)[1], step)) is not None
    }
    rates = {site: rate for site, (rate, _) in site_load(load, settings.policy.sites).items()}
    overloaded = replica_hours = 0.0
    for start, end in spans(origins, len(frame)):
        replicas = {d.target: d.replicas for d in decisions.get(start, ()) if isinstance(d, ScaleCompute)}
        for site, rate in rates.items():
            running = replicas.get(site, settings.llm.initial_replicas)
            overloaded += (rate[start:end] > running * policy.prompts_per_replica).sum() * hours
            replica_hours += running * (end - start) * hours
    return {"compute_overload_hours": overloaded, "replica_hours": replica_hours}


def score_adapters(
    frame: pd.DataFrame, origins: Sequence[int], decisions: Mapping[int, Sequence[Decision]], policies: Sequence[Policy],
    settings: Settings,
) -> dict[str, float]:  # fmt: skip
    """Requests whose adapter (``policy.class_adapters`` for a service class) was placed at the site
    that serves them (``policy.sites``) — cloud calls saved — or not (misses)."""
    placers = [p for p in policies if isinstance(p, AdapterPlacementPolicy)]
    if not placers:
        return {}
    demand = []
    for series_id in frame.columns:
        adapter = placers[0].adapter_of(split_series_key(series_id)[1], settings.policy.class_adapters)
        site = serving_site(series_id, settings.policy.sites)
        if adapter is not None and site is not None:
            demand.append((site, adapter, np.nan_to_num(frame[series_id].to_numpy(dtype=float))))
    saved = missed = 0.0
    for start, end in spans(origins, len(frame)):
        placed = {(d.target, d.adapter) for d in decisions.get(start, ()) if isinstance(d, PlaceAdapter)}
        for site, adapter, counts in demand:
            requests = counts[start:end].sum()
            if (site, adapter) in placed:
                saved += requests
            else:
                missed += requests
    total = saved + missed
    return {"cloud_calls_saved": saved, "adapter_misses": missed, "adapter_hit_rate": saved / total if total else 0.0}


def score_replay(
    frame: pd.DataFrame, origins: Sequence[int], record: VariantReplay, capacities: Mapping[str, float], unreserved_share: float
) -> dict[str, float]:
    """Every score that applies to the variant's policies, with its decision counts (see
    :func:`score_reservations` for ``unreserved_share``)."""
    decisions = record.decisions
    kinds: dict[str, int] = {}
    for made in decisions.values():
        for decision in made:
            kinds[decision.kind] = kinds.get(decision.kind, 0) + 1
    return {
        "decisions": float(sum(kinds.values())),
        "rejected_by_guardrails": float(record.rejected),
        **score_reservations(frame, origins, decisions, record.policies, record.settings, capacities, unreserved_share),
        **score_autoscale(frame, origins, decisions, record.policies, record.settings),
        **score_adapters(frame, origins, decisions, record.policies, record.settings),
    }


def baseline(record: VariantReplay) -> VariantReplay:
    """``record``'s policies and settings with no decision ever in force (the status quo)."""
    return VariantReplay(Variant(NO_DECISIONS), record.policies, record.settings)


def whatif_origins(n_steps: int, warmup: int, every: int) -> list[int]:
    """Origins from ``warmup`` every ``every`` steps while a whole round's span of trace follows."""
    try:
        return rolling_origins(n_steps, warmup, every, every)
    except ValueError as exc:
        raise UserError(
            f"a trace of {n_steps} steps leaves no decision round of {every} steps after a warm-up of {warmup}: "
            "pass a longer trace, a shorter --warmup-days or a smaller --every"
        ) from exc
