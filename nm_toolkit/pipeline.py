"""The closed loop: telemetry -> collector -> series -> forecasts -> policies -> decisions.

Every hop goes over the bus, through the same topics a distributed deployment uses, so each stage
can equally run as its own service against Kafka. :class:`ClosedLoop` drives them step by step in
one process, which is what ``nmt demo`` and ``nmt run`` do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from collectors.service import TelemetryCollector
from forecasting.service import ForecastService
from forecasting.store import ForecastStore, default_store_path
from nm_toolkit.bus import Bus
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter
from nm_toolkit.controller.service import DecisionController, RoundReport
from nm_toolkit.controller.topic import DecisionTopicAdapter
from nm_toolkit.schemas import Decision, DecisionAdapter, Forecast
from policies import Policy, load_policies

log = logging.getLogger(__name__)


@dataclass
class LoopReport:
    """What one pass of the loop did, for people (a table) and scripts (JSON)."""

    collector: dict[str, int]
    series: int = 0
    forecasts: list[Forecast] = field(default_factory=list)
    skipped_series: dict[str, str] = field(default_factory=dict)
    round: RoundReport = field(default_factory=RoundReport)

    @property
    def decisions(self) -> list[Decision]:
        """The decisions that passed the guardrails."""
        return list(self.round.guardrails.accepted)


class ClosedLoop:
    """Runs collector, forecasting and policies over ``bus`` with ``settings``.

    Decisions go through :class:`~nm_toolkit.controller.service.DecisionController`: guardrails
    first, then every adapter in ``adapters`` (an SDN controller, say) and the decisions topic.
    """

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        policies: list[Policy] | None = None,
        capacities: dict[str, float] | None = None,
        adapters: list[ControllerAdapter] | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        if policies is None:
            policies = load_policies(settings.policy.enabled, settings.controller.policy_params)
        self.collector = TelemetryCollector(bus, settings)
        store_path = settings.forecast_service.store_path or default_store_path(settings.state_dir)
        self.forecasting = ForecastService(bus, settings, ForecastStore(store_path if bus.durable else None))
        topics = settings.topics
        bus.create_topics([topics.decisions])
        self._producer = bus.producer()
        self.controller = DecisionController(
            settings,
            policies,
            [*(adapters or []), DecisionTopicAdapter(self._producer, topics.decisions)],
            {**settings.policy.capacities, **(capacities or {})},
        )

    def collect(self, idle_s: float = 1.0, close_windows: bool = False) -> int:
        """Consume telemetry until none arrives for ``idle_s``; optionally close open windows."""
        applied = 0
        while n := self.collector.step(timeout_s=idle_s):
            applied += n
        if close_windows:
            self.collector.close_all_windows()
        return applied

    def forecast(self, now: datetime | None = None) -> tuple[list[Forecast], dict[str, str]]:
        """Store the closed windows waiting on the series topic, then forecast every series with
        enough history and publish the forecasts (the forecasting service's round)."""
        while self.forecasting.step(timeout_s=0.05):
            pass
        return self.forecasting.forecast_round(now)

    def run_once(self, idle_s: float = 1.0, close_windows: bool = False) -> LoopReport:
        """Collect what is waiting, forecast, decide: one turn of the loop."""
        self.collect(idle_s, close_windows)
        forecasts, skipped = self.forecast()
        round_report = self.controller.decide(forecasts)
        self.controller.expire()
        return LoopReport(
            collector=self.collector.stats_dict(),
            series=len(self.forecasting.store.series_ids()),
            forecasts=forecasts,
            skipped_series=skipped,
            round=round_report,
        )

    def close(self) -> None:
        self.collector.close()
        self.forecasting.close()
        for adapter in self.controller.adapters:
            adapter.close()
        self._producer.close()


def decisions_json(decisions: list[Decision]) -> list[dict[str, object]]:
    return [orjson.loads(DecisionAdapter.dump_json(d)) for d in decisions]
