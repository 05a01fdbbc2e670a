"""One decision round of the controller: policies -> guardrails -> adapters, with the
decisions in force tracked (for guardrails and for policies' ``context.applied``) until their
TTL ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter, Outcome
from nm_toolkit.schemas import Decision, Forecast
from policies import Policy, PolicyContext
from policies.base import capacity_of
from policies.guardrails import GuardrailReport, Guardrails, llm_actuators
from policies.intents import NetworkIntent
from policies.registry import PolicyRun, evaluate_policies

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    """What one round did: per policy, per guardrail rule, per adapter."""

    runs: list[PolicyRun] = field(default_factory=list)
    guardrails: GuardrailReport = field(default_factory=GuardrailReport)
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    withdrawn: list[str] = field(default_factory=list)

    @property
    def without_actuator(self) -> int:
        """Decisions nothing would carry out: rejected by the ``actuator`` rule, or reported
        unsupported by every adapter that saw them (a queue without OVSDB, say)."""
        seen: dict[str, list[str]] = {}
        for outcomes in self.outcomes.values():
            for o in outcomes:
                seen.setdefault(o.key, []).append(o.status)
        unsupported = sum(all(status == "unsupported" for status in statuses) for statuses in seen.values())
        return unsupported + sum(r.rule == "actuator" for r in self.guardrails.rejected)

    def summary(self) -> dict[str, int]:
        counts = {
            "policies_ok": sum(r.status == "ok" for r in self.runs),
            "policies_skipped": sum(r.status != "ok" for r in self.runs),
            "decided": sum(len(r.decisions) for r in self.runs),
            "accepted": len(self.guardrails.accepted),
            "rejected": len(self.guardrails.rejected),
            "conflicts": len(self.guardrails.conflicts),
            "withdrawn": len(self.withdrawn),
            "without_actuator": self.without_actuator,
        }
        for adapter, outcomes in self.outcomes.items():
            for status in ("applied", "unchanged", "dry_run", "unsupported", "expired", "failed"):
                counts[f"{adapter}_{status}"] = sum(o.status == status for o in outcomes)
        return counts


class DecisionController:
    """Runs ``policies`` and applies what passes the guardrails through every adapter.

    Adapters are tried in order; each decision goes to all of them (an OpenFlow adapter
    reports non-switch decisions as unsupported, the topic adapter carries everything).
    """

    def __init__(
        self,
        settings: Settings,
        policies: Sequence[Policy],
        adapters: Sequence[ControllerAdapter],
        capacities: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policies = list(policies)
        self.adapters = list(adapters)
        self.capacities = dict(capacities or {})
        self.clock = clock
        # one clock: a replay runs on the trace's
        self.guardrails = Guardrails(settings.controller.guardrails, self._capacity_of, clock, llm_actuators(settings))
        self._in_force: dict[str, Decision] = {}

    def _capacity_of(self, target: str) -> float:
        return capacity_of(target, self.capacities, self.settings.policy)

    @property
    def in_force(self) -> dict[str, Decision]:
        """Decisions applied and not yet expired, by idempotency key."""
        now = self.clock()
        for key in [k for k, d in self._in_force.items() if d.created_at.timestamp() + d.ttl_seconds <= now]:
            del self._in_force[key]
        return dict(self._in_force)

    def decide(
        self,
        forecasts: Sequence[Forecast] = (),
        intents: Sequence[NetworkIntent] = (),
        adapter_popularity: Mapping[str, Mapping[str, float]] | None = None,
        now: datetime | None = None,
    ) -> RoundReport:
        context = PolicyContext(
            now=now or datetime.now(UTC),
            settings=self.settings.policy,
            forecasts={f.series_id: f for f in forecasts},
            capacities=self.capacities,
            applied=self.in_force,
            intents=list(intents),
            adapter_popularity={site: dict(counts) for site, counts in (adapter_popularity or {}).items()},
            targets=self.settings.controller.targets,
        )
        runs = evaluate_policies(self.policies, context, self.settings.controller.policy_time_budget_seconds)
        in_force_ids = {i.id for i in intents}
        retracted = [k for k, d in context.applied.items() if d.intent_id is not None and d.intent_id not in in_force_ids]
        report = self.apply([d for run in runs if run.status == "ok" for d in run.decisions], retracted)
        report.runs = runs
        return report

    def apply(self, decisions: Sequence[Decision], retracted: Sequence[str] = ()) -> RoundReport:
        """Guardrails, then every adapter; superseded decisions, and the ``retracted`` ones (keys of
        decisions whose intent is no longer in force), are withdrawn."""
        report = RoundReport(guardrails=self.guardrails.check(decisions, self.in_force))
        for rejection in report.guardrails.rejected:
            log.warning("guardrail %s rejected %s: %s", rejection.rule, rejection.decision.idempotency_key, rejection.reason)
        superseded = [d.idempotency_key for d in report.guardrails.superseded if not d.dry_run] + list(retracted)
        for adapter in self.adapters:
            if superseded:
                report.withdrawn.extend(adapter.withdraw(superseded))
            report.outcomes[adapter.name] = adapter.apply(report.guardrails.accepted)
        for key in superseded:
            self._in_force.pop(key, None)
        applied = {
            o.key for outcomes in report.outcomes.values() for o in outcomes if o.status in ("applied", "unchanged")
        }
        for decision in report.guardrails.accepted:
            if decision.idempotency_key in applied:
                self._in_force[decision.idempotency_key] = decision
        return report

    def expire(self) -> list[str]:
        """Let every adapter drop what outlived its TTL (the OpenFlow app also does it itself)."""
        now = self.clock()
        return [key for adapter in self.adapters for key in adapter.expire(now)]
