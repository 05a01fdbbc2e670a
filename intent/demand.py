"""User intents as demand series: requests and Mbit/s per location and service class, per window.

NetGPT's popularity prediction forecasts what users will ask for, where. Each inferred
:class:`~intent.schema.UserServiceIntent` becomes two demand records (one request, its bandwidth
need) on ``intent.demand_topic``, keyed by location, and a telemetry collector windows that topic
into :class:`~nm_toolkit.schemas.SeriesPoint` records on the series topic: the forecasting service
then forecasts ``cell-7|demand.video.requests`` like any other series.

Why a keyed topic between the two steps rather than windows in the intent service itself: prompts
arrive keyed by request, so one location's requests are spread over every partition, and two
members (or two partitions) each closing a partial window of the same series would overwrite each
other downstream. Re-keying by location puts a series in exactly one partition, and the collector
brings its checkpoints with it (a window counts each demand record once, even after a crash).

Windows close by event-time watermark, so order matters: producers should key prompts by cell, as
telemetry is keyed by source, and then a location's demand arrives in order. Prompts keyed
otherwise are still windowed in order while the service keeps up, but a backlog is read partition
by partition, and demand behind an already closed window goes to the late topic, counted
(``demand_late``), not into the series; ``bench/intent_service.py`` measures both cases.
"""

from __future__ import annotations

from datetime import datetime

from collectors.service import TelemetryCollector
from nm_toolkit.bus.checkpoints import CheckpointStore
from intent.schema import UserServiceIntent
from nm_toolkit.bus import Bus
from nm_toolkit.config import Settings
from nm_toolkit.schemas import TelemetryBatch, TelemetryRecord


def demand_metric(service_class: str, measure: str) -> str:
    """``("video", "requests")`` -> ``"demand.video.requests"``: the metric of a demand series."""
    return f"demand.{service_class}.{measure}"


def demand_records(intent: UserServiceIntent, location: str, at: datetime) -> list[TelemetryRecord]:
    """One request and its bandwidth need at ``location`` and event time ``at``."""
    return [
        TelemetryRecord(ts=at, source=location, metric=demand_metric(intent.service_class, "requests"), value=1.0, unit="requests"),
        TelemetryRecord(ts=at, source=location, metric=demand_metric(intent.service_class, "mbps"), value=intent.bandwidth_mbps, unit="Mbit/s"),
    ]


def demand_batches(records: list[TelemetryRecord]) -> dict[str, TelemetryBatch]:
    """One batch per location, its records in event-time order (keyed by location on the demand
    topic): a batch read from several prompt partitions then reaches the windows in order, not
    partition after partition."""
    by_location: dict[str, list[TelemetryRecord]] = {}
    for record in sorted(records, key=lambda r: r.ts):
        by_location.setdefault(record.source, []).append(record)
    return {location: TelemetryBatch(records=batch) for location, batch in by_location.items()}


def demand_collector(settings: Settings, bus: Bus) -> TelemetryCollector:
    """A collector that windows ``intent.demand_topic`` into demand series on ``topics.series``,
    with the intent section's group, windows and dead-letter topic."""
    cfg = settings.intent
    collector = settings.collector.model_copy(
        update={
            "group_id": f"{cfg.group_id}-demand",
            "window_seconds": cfg.window_seconds,
            "allowed_lateness_seconds": cfg.allowed_lateness_seconds,
            "idle_close_seconds": cfg.idle_close_seconds,
        }
    )
    return TelemetryCollector(
        collector,
        input_topic=cfg.demand_topic,
        series_topic=settings.topics.series,
        late_topic=settings.topics.late,
        dead_letter_topic=cfg.dead_letter_topic,
        checkpoints=CheckpointStore.for_service(settings.state_dir, bus, "intent-demand"),
        name="intent-demand",
    )
