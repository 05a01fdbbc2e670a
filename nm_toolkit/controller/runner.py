"""``nmt controller run`` as a library: the closed loop's collector and forecasting, the intents
topic, then policies -> guardrails -> the configured adapter and the decisions topic, every
``interval`` seconds until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from nm_toolkit.bus import Bus, Consumer, Producer, next_offsets
from nm_toolkit.config import Settings
from nm_toolkit.controller.base import ControllerAdapter
from nm_toolkit.controller.service import DecisionController, RoundReport
from nm_toolkit.pipeline import ClosedLoop
from policies.intents import NetworkIntent

log = logging.getLogger(__name__)
INTENT_ERROR_HEADER = "nmt.error.reason"


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


class IntentInbox:
    """The intents in force, by id (a re-sent intent replaces the earlier one). Records that are
    not valid intents go to ``<intents>.dlq`` with the reason, never silently dropped."""

    def __init__(self, bus: Bus, settings: Settings, producer: Producer) -> None:
        self.topic = settings.topics.intents
        self.dead_letter_topic = f"{self.topic}.dlq"
        bus.create_topics([self.topic, self.dead_letter_topic])
        self._consumer: Consumer = bus.consumer([self.topic], "nmt-controller-intents")
        self._producer = producer
        self.intents: dict[str, NetworkIntent] = {}
        self.dead_lettered = 0

    def poll(self, timeout_s: float = 0.05) -> list[NetworkIntent]:
        while messages := self._consumer.poll(1000, timeout_s):
            for message in messages:
                try:
                    intent = NetworkIntent.model_validate_json(message.value)
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"]
                    self._producer.send(self.dead_letter_topic, message.value, message.key, [(INTENT_ERROR_HEADER, reason.encode())])
                    self.dead_lettered += 1
                    continue
                self.intents[intent.id] = intent
            self._producer.flush()
            self._consumer.commit(next_offsets(messages))
        return list(self.intents.values())

    def close(self) -> None:
        self._consumer.close()


@dataclass
class ControllerRun:
    """Everything ``nmt controller run`` holds; :meth:`round` is one pass of the loop."""

    settings: Settings
    bus: Bus
    loop: ClosedLoop
    inbox: IntentInbox
    rounds: list[dict[str, int]] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, bus: Bus) -> ControllerRun:
        switch = switch_adapter(settings)
        loop = ClosedLoop(bus, settings, adapters=[switch] if switch is not None else [])
        return cls(settings, bus, loop, IntentInbox(bus, settings, bus.producer()))

    @property
    def controller(self) -> DecisionController:
        return self.loop.controller

    def round(self, collect_idle_s: float = 0.5) -> RoundReport:
        self.loop.collect(idle_s=collect_idle_s)
        forecasts, _skipped = self.loop.forecast()
        report = self.controller.decide(forecasts, self.inbox.poll())
        self.controller.expire()
        self.rounds.append(report.summary() | {"forecasts": len(forecasts), "intents_dead_lettered": self.inbox.dead_lettered})
        return report

    def run(self, stop: threading.Event, interval_s: float, max_rounds: int | None = None,
            on_round: Callable[[dict[str, int]], None] | None = None) -> None:
        while not stop.is_set() and (max_rounds is None or len(self.rounds) < max_rounds):
            started = time.monotonic()
            self.round(collect_idle_s=min(1.0, interval_s))
            if on_round is not None:
                on_round(self.rounds[-1])
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))

    def close(self) -> None:
        self.inbox.close()
        self.loop.close()
