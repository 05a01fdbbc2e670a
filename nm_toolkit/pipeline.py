"""The closed loop in one process: telemetry -> collector -> series -> forecasts -> decisions.

The same three stream services that ``nmt collect run``, ``nmt forecast serve`` and ``nmt
controller run`` run as separate processes, each on its own :class:`~nm_toolkit.bus.runtime.StreamRunner`,
stepped in turn on one bus. Every hop goes over the bus's topics; nothing is handed over in
memory. ``nmt demo`` uses it on the embedded bus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from collectors.service import TelemetryCollector, telemetry_collector
from forecasting.service import ForecastService, forecast_service
from nm_toolkit.bus import Bus
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter
from nm_toolkit.controller.runner import DecisionService, decision_service
from nm_toolkit.controller.service import RoundReport
from nm_toolkit.schemas import Decision, DecisionAdapter, Forecast
from policies import Policy

log = logging.getLogger(__name__)


@dataclass
class LoopReport:
    """What one pass of the loop did, for people (a table) and scripts (JSON)."""

    collector: dict[str, float]
    series: int = 0
    forecasts: list[Forecast] = field(default_factory=list)
    skipped_series: dict[str, str] = field(default_factory=dict)
    round: RoundReport = field(default_factory=RoundReport)

    @property
    def decisions(self) -> list[Decision]:
        """The decisions that passed the guardrails."""
        return list(self.round.guardrails.accepted)


class ClosedLoop:
    """The collector, forecasting and decision services over ``bus``, stepped in one process.

    ``adapters`` carry decisions out besides the decisions topic (an SDN controller, say).
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
        self.collector = StreamRunner(bus, telemetry_collector(settings, bus))
        self.forecasting = StreamRunner(bus, forecast_service(settings, bus))
        self.deciding = StreamRunner(
            bus, decision_service(settings, policies=policies, adapters=adapters or [], capacities=capacities)
        )

    @property
    def collector_service(self) -> TelemetryCollector:
        return self.collector.service  # type: ignore[return-value]

    @property
    def forecast_service(self) -> ForecastService:
        return self.forecasting.service  # type: ignore[return-value]

    @property
    def decision_service(self) -> DecisionService:
        return self.deciding.service  # type: ignore[return-value]

    def collect(self, idle_s: float = 0.2, close_windows: bool = False) -> int:
        """Run the collector until the telemetry topic is drained; optionally close open windows
        (the end of a finite input)."""
        applied = run_until_idle([self.collector], idle_s)
        if close_windows:
            self.collector_service.close_all_windows(self.collector.emitter)
            self.collector.commit()
        return applied

    def forecast(self, now: datetime | None = None) -> tuple[list[Forecast], dict[str, str]]:
        """Run the forecasting service until the series topic is drained, then one forecast round."""
        run_until_idle([self.forecasting], 0.05)
        made = self.forecast_service.forecast_round(self.forecasting.emitter, now)
        self.forecasting.commit()
        return made

    def decide(self, now: datetime | None = None) -> RoundReport:
        """Run the decision stage until it has read the forecasts and intents and made a round
        (its own, once caught up, or one now if its interval has not passed since the last)."""
        service = self.decision_service
        rounds = service.counters.rounds
        run_until_idle([self.deciding], 0.05)
        if service.counters.rounds == rounds:
            service.decide_round(now)
            self.deciding.commit()
        return service.reports[-1]

    def run_once(self, idle_s: float = 0.2, close_windows: bool = False) -> LoopReport:
        """Collect what is waiting, forecast, decide: one turn of the loop."""
        self.collect(idle_s, close_windows)
        forecasts, skipped = self.forecast()
        report = self.decide()
        return LoopReport(
            collector=self.collector.stats_dict(),
            series=len(self.forecast_service.store.series_ids()),
            forecasts=forecasts,
            skipped_series=skipped,
            round=report,
        )

    def close(self) -> None:
        for runner in (self.collector, self.forecasting, self.deciding):
            runner.close()


def decisions_json(decisions: list[Decision]) -> list[dict[str, object]]:
    return [orjson.loads(DecisionAdapter.dump_json(d)) for d in decisions]
