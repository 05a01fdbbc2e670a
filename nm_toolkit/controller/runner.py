"""The decision stage, ``nmt controller run``: forecasts and intents in, decisions carried out.

A stream service on :mod:`nm_toolkit.bus.runtime`. It reads two table topics, whose latest value
per key is the state, from the beginning on every assignment:

* ``topics.forecasts`` (:class:`~nm_toolkit.schemas.Forecast`, keyed by series id), published by
  the forecasting service;
* ``topics.intents`` (:class:`~policies.intents.NetworkIntent`, keyed by intent id), published by
  the intent service for accepted operator intents.

Every ``controller.interval_seconds``, once it has caught up with both, it runs a round: the
enabled policies on the forecasts issued within ``controller.forecast_max_age_seconds`` and the
intents in force, then the guardrails, then the configured adapter (OpenFlow, ONOS, Faucet) and
the decisions topic. It embeds no collector and no forecaster: stages meet only on topics. Run one
member per group: a round must see every series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nm_toolkit.bus import Message
from nm_toolkit.bus.runtime import Emitter, Progress, Rejected, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter
from nm_toolkit.controller.service import DecisionController, RoundReport
from nm_toolkit.controller.topic import DecisionTopicAdapter
from nm_toolkit.schemas import Forecast
from policies import Policy, load_policies
from policies.intents import NetworkIntent

log = logging.getLogger(__name__)


def switch_adapter(settings: Settings) -> ControllerAdapter | None:
    """The adapter ``controller.adapter`` names; ``kafka`` means the decisions topic alone."""
    kind = settings.controller.adapter
    if kind == "openflow":
        from nm_toolkit.controller.runtime import start_openflow_controller

        return start_openflow_controller(settings.controller)
    if kind == "onos":
        from nm_toolkit.controller.onos import OnosAdapter

        return OnosAdapter(settings.controller)
    if kind == "faucet":
        from nm_toolkit.controller.faucet import FaucetAdapter

        return FaucetAdapter(settings.controller)
    return None


@dataclass
class DecisionStats:
    """What the stage read and did."""

    forecasts_read: int = 0
    intents_read: int = 0
    tombstones_read: int = 0
    rounds: int = 0
    decisions_accepted: int = 0
    decisions_rejected: int = 0
    decisions_applied: int = 0
    decisions_failed: int = 0
    decisions_without_actuator: int = 0  # nothing would carry them out (see RoundReport.without_actuator): 0 when every arrow holds


@dataclass
class DecisionService(StreamService):
    """Policies -> guardrails -> adapters over the forecasts and intents tables."""

    settings: Settings
    policies: Sequence[Policy]
    adapters: Sequence[ControllerAdapter] = ()
    capacities: dict[str, float] = field(default_factory=dict)
    on_round: Callable[[RoundReport], None] | None = None
    counters: DecisionStats = field(default_factory=DecisionStats)
    forecasts: dict[str, Forecast] = field(default_factory=dict)
    intents: dict[str, NetworkIntent] = field(default_factory=dict)
    reports: list[RoundReport] = field(default_factory=list)

    name = "controller"

    def __post_init__(self) -> None:
        cfg, topics = self.settings.controller, self.settings.topics
        self.group_id = cfg.group_id
        self.dead_letter_topic = cfg.dead_letter_topic
        self.forecast_topic = Topic(topics.forecasts, Forecast, table=True)
        self.intent_topic = Topic(topics.intents, NetworkIntent, table=True)
        self.inputs = [self.forecast_topic, self.intent_topic]
        self.outputs = [topics.decisions]
        self.controller: DecisionController | None = None
        self._last_round = time.monotonic() - cfg.interval_seconds  # due at once, once caught up

    def started(self, out: Emitter) -> None:
        """Decisions go to every adapter and, through ``out``, to the decisions topic."""
        topic_adapter = DecisionTopicAdapter(out, self.settings.topics.decisions)
        self.controller = DecisionController(
            self.settings, self.policies, [*self.adapters, topic_adapter], {**self.settings.policy.capacities, **self.capacities}
        )

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        for message in messages:
            try:
                if not message.value and message.key is not None:  # a tombstone: the key leaves the table
                    table = self.forecasts if message.topic == self.forecast_topic.name else self.intents
                    table.pop(message.key.decode("utf-8", "replace"), None)
                    self.counters.tombstones_read += 1
                elif message.topic == self.forecast_topic.name:
                    forecast = self.forecast_topic.decode(message)
                    self.forecasts[forecast.series_id] = forecast
                    self.counters.forecasts_read += 1
                else:
                    intent = self.intent_topic.decode(message)
                    self.intents[intent.id] = intent
                    self.counters.intents_read += 1
            except Rejected as exc:
                out.dead_letter(message, exc.errors)

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """A round every ``interval_seconds``, each once the tables are read up to their end (a
        poll that brought nothing; at the latest after twice the interval)."""
        elapsed = time.monotonic() - self._last_round
        interval = self.settings.controller.interval_seconds
        if final or elapsed < interval or not (progress.caught_up or elapsed >= 2 * interval):
            return False
        self._last_round = time.monotonic()
        self.decide_round()
        return True

    def fresh_forecasts(self, now: datetime | None = None) -> list[Forecast]:
        """The forecasts issued within ``forecast_max_age_seconds`` of ``now``."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.settings.controller.forecast_max_age_seconds)
        return [f for f in self.forecasts.values() if f.issued_at >= cutoff]

    def decide_round(self, now: datetime | None = None) -> RoundReport:
        """Policies -> guardrails -> adapters on what the tables hold now."""
        if self.controller is None:
            raise RuntimeError("the decision stage runs on a StreamRunner, which starts it")
        report = self.controller.decide(self.fresh_forecasts(now), list(self.intents.values()), now=now)
        self.controller.expire()
        self.counters.rounds += 1
        self.counters.decisions_accepted += len(report.guardrails.accepted)
        self.counters.decisions_rejected += len(report.guardrails.rejected)
        outcomes = [o for adapter_outcomes in report.outcomes.values() for o in adapter_outcomes]
        self.counters.decisions_applied += sum(o.status == "applied" for o in outcomes)
        self.counters.decisions_failed += sum(o.status == "failed" for o in outcomes)
        self.counters.decisions_without_actuator += report.without_actuator
        self.reports.append(report)
        del self.reports[:-100]
        if self.on_round is not None:
            self.on_round(report)
        return report

    def stats(self) -> dict[str, float]:
        return vars(self.counters) | {"forecasts_held": len(self.forecasts), "intents_held": len(self.intents)}

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()


def decision_service(
    settings: Settings,
    *,
    policies: Sequence[Policy] | None = None,
    adapters: Sequence[ControllerAdapter] | None = None,
    capacities: dict[str, float] | None = None,
) -> DecisionService:
    """The decision stage the settings describe: enabled policies, the configured adapter."""
    if policies is None:
        policies = load_policies(settings.policy.enabled, settings.controller.policy_params)
    if adapters is None:
        switch = switch_adapter(settings)
        adapters = [switch] if switch is not None else []
    return DecisionService(settings, policies, adapters, dict(capacities or {}))
