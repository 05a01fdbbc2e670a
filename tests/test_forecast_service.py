"""The forecasting service on the embedded bus and on the real Kafka broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from forecasting.service import ForecastService, forecast_service
from forecasting.store import ForecastStore
from nm_toolkit.bus import Bus, EmbeddedBus
from nm_toolkit.bus.deadletter import ORIGIN, REASON
from nm_toolkit.bus.runtime import StreamRunner, run_until_idle
from nm_toolkit.config import Settings, load_settings
from nm_toolkit.schemas import Forecast, SeriesPoint

START = datetime(2024, 1, 1, tzinfo=UTC)


def publish_points(bus: Bus, settings: Settings, sources: int = 3, hours: int = 72, first_hour: int = 0) -> None:
    producer = bus.producer()
    for s in range(sources):
        for h in range(first_hour, first_hour + hours):
            point = SeriesPoint(
                source=f"cell-{s}", metric="traffic", window_start=START + timedelta(hours=h), window_seconds=3600,
                count=4, sum=10.0 * (s + 1) + (h % 24), min=1.0, max=30.0,
            )
            producer.send(settings.topics.series, point.model_dump_json().encode(), point.series_id.encode())
    producer.send(settings.topics.series, b'{"source": "cell-9", "metric": "traffic"}', b"cell-9|traffic")
    producer.send(settings.topics.series, b"\xff not json", None)
    producer.flush()


def runner(bus: Bus, settings: Settings, store_path: Path) -> StreamRunner:
    """The forecasting service with its store in a file (the embedded bus would keep it in memory)."""
    cfg = settings.forecast_service
    service = ForecastService(
        cfg, settings.forecast, series_topic=settings.topics.series, forecasts_topic=settings.topics.forecasts,
        store=ForecastStore(store_path),
    )  # fmt: skip
    return StreamRunner(bus, service)


def test_service_on_embedded_bus_forecasts_dead_letters_and_commits(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, forecast={"horizon": 24, "min_history": 48}, forecast_service={"model": "seasonal_mean"})
    bus = EmbeddedBus(default_partitions=2)
    bus.create_topics([settings.topics.series])
    publish_points(bus, settings)
    service = runner(bus, settings, tmp_path / "forecasts.sqlite")
    run_until_idle([service])
    assert service.service.counters.points == 3 * 72 and service.emitter.dead_lettered == 2
    dead = bus.messages(settings.forecast_service.dead_letter_topic)
    assert {m.value for m in dead} == {b'{"source": "cell-9", "metric": "traffic"}', b"\xff not json"}
    reasons = {m.value: m.header(REASON) for m in dead}
    assert reasons[b'{"source": "cell-9", "metric": "traffic"}'].startswith(b"not a SeriesPoint")
    assert reasons[b"\xff not json"].startswith(b"not UTF-8") and all(m.header(ORIGIN) for m in dead)
    assert sum(bus._committed[settings.forecast_service.group_id].values()) == 3 * 72 + 2  # everything applied is committed

    forecasts, skipped = service.service.forecast_round(service.emitter)  # after the round it made itself once caught up
    assert skipped == {} and len(forecasts) == 3
    published = [Forecast.model_validate_json(m.value) for m in bus.messages(settings.topics.forecasts)]
    by_series = {f.series_id: f for f in published}
    cell0 = by_series["cell-0|traffic"]
    assert cell0.start == START + timedelta(hours=72) and cell0.horizon == 24 and cell0.step_seconds == 3600
    assert cell0.mean[:3] == pytest.approx([10.0, 11.0, 12.0])  # the daily ramp of the sums, recovered
    service.close()
    with ForecastStore(tmp_path / "forecasts.sqlite") as store:
        assert store.latest("cell-2|traffic") == by_series["cell-2|traffic"]
        assert len(store.history("cell-1|traffic")) == 72


def test_service_restarts_from_the_store_without_losing_windows(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, forecast={"horizon": 6, "min_history": 24}, forecast_service={"model": "snaive_daily"})
    bus = EmbeddedBus(default_partitions=1)
    bus.create_topics([settings.topics.series])
    publish_points(bus, settings, sources=1, hours=30)
    first = runner(bus, settings, tmp_path / "forecasts.sqlite")
    run_until_idle([first])
    first.close()
    second = runner(bus, settings, tmp_path / "forecasts.sqlite")  # same group: nothing is redelivered, history comes from the store
    assert second.step(timeout_s=0.2) == 0
    forecasts, _ = second.service.forecast_round(second.emitter)
    assert len(forecasts) == 1 and forecasts[0].start == START + timedelta(hours=30)
    second.close()


@pytest.mark.parametrize("model", ["seasonal_mean", "last_value"])
def test_rounds_between_refits_update_the_models_and_match_a_restarted_refit(tmp_path: Path, model: str) -> None:
    """A round between refits takes in only the new windows; its forecasts are the ones a restarted
    service (which refits from the stored history) makes from the same data."""
    settings = load_settings(
        state_dir=tmp_path, forecast={"horizon": 6, "min_history": 24},
        forecast_service={"model": model, "refit_every_rounds": 100},
    )  # fmt: skip
    bus = EmbeddedBus(default_partitions=1)
    bus.create_topics([settings.topics.series])
    publish_points(bus, settings, sources=2, hours=48)
    service = runner(bus, settings, tmp_path / "forecasts.sqlite")
    run_until_idle([service])
    publish_points(bus, settings, sources=2, hours=30, first_hour=48)
    run_until_idle([service])
    updated, _ = service.service.forecast_round(service.emitter)
    counters = service.service.counters
    assert counters.refits == 1 and counters.rounds >= 2
    restarted = runner(bus, settings, tmp_path / "forecasts.sqlite")
    refit, _ = restarted.service.forecast_round(restarted.emitter)
    assert restarted.service.counters.refits == 1
    assert [f.start for f in updated] == [f.start for f in refit] == [START + timedelta(hours=78)] * 2
    for a, b in zip(updated, refit, strict=True):
        assert (a.series_id, a.mean, a.lower, a.upper) == (b.series_id, b.mean, b.lower, b.upper)
    service.close()
    restarted.close()


def test_refits_follow_the_schedule(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path, forecast={"horizon": 6, "min_history": 24},
        forecast_service={"model": "ses", "refit_every_rounds": 2},
    )  # fmt: skip
    service = ForecastService(
        settings.forecast_service, settings.forecast, series_topic="s", forecasts_topic="f", store=ForecastStore(None)
    )
    service.store.put_points([("a|x", START + timedelta(hours=h), 3600, float(h % 5)) for h in range(30)])
    emitter = type("Counting", (), {"send": lambda self, *a: None})()
    refits = []
    for _ in range(5):
        service.forecast_round(emitter)
        refits.append(service.counters.refits)
    assert refits == [1, 1, 2, 2, 3]


def test_missing_windows_of_event_counts_are_zeros_and_of_telemetry_are_repaired(tmp_path: Path) -> None:
    """Demand only gets a window when someone asked; a traffic gauge without a window had an outage."""
    settings = load_settings(state_dir=tmp_path, forecast={"horizon": 24, "min_history": 24}, forecast_service={"model": "seasonal_mean"})
    bus = EmbeddedBus(default_partitions=1)
    bus.create_topics([settings.topics.series])
    producer = bus.producer()
    for metric in ("demand.video.requests", "traffic"):
        for h in range(0, 72, 2):  # every odd hour is missing
            point = SeriesPoint(source="cell-1", metric=metric, window_start=START + timedelta(hours=h), window_seconds=3600, count=3, sum=3.0, min=1.0, max=1.0)
            producer.send(settings.topics.series, point.model_dump_json().encode(), point.series_id.encode())
    producer.flush()
    service = StreamRunner(bus, forecast_service(settings, bus))
    run_until_idle([service])
    forecasts, _ = service.service.forecast_round(service.emitter, now=START + timedelta(hours=72))
    by_series = {f.series_id: f for f in forecasts}
    assert by_series["cell-1|demand.video.requests"].mean[:4] == pytest.approx([0.0, 3.0, 0.0, 3.0])
    assert by_series["cell-1|traffic"].mean[:4] == pytest.approx([3.0, 3.0, 3.0, 3.0])
    service.close()


@pytest.mark.kafka
def test_service_on_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    from nm_toolkit.bus.kafka import KafkaBus

    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        state_dir=tmp_path,
        topics={"series": f"series-{suffix}", "forecasts": f"forecasts-{suffix}"},
        forecast={"horizon": 12, "min_history": 48},
        forecast_service={"model": "seasonal_mean", "dead_letter_topic": f"dlq-{suffix}", "group_id": f"fc-{suffix}"},
    )
    bus = KafkaBus(kafka_bootstrap, default_partitions=2)
    bus.create_topics([settings.topics.series])
    publish_points(bus, settings, sources=2, hours=48)
    service = StreamRunner(bus, forecast_service(settings, bus))
    for _ in range(100):
        service.step(timeout_s=0.5)
        if service.stats.messages >= 2 * 48 + 2:
            break
    assert service.service.counters.points == 96 and service.emitter.dead_lettered == 2
    forecasts, _ = service.service.forecast_round(service.emitter)
    service.close()
    assert {f.series_id for f in forecasts} == {"cell-0|traffic", "cell-1|traffic"}
    reader = bus.consumer([settings.topics.forecasts], f"reader-{suffix}")
    got = []
    for _ in range(40):
        got += reader.poll(100, 0.5)
        if len(got) >= 2:
            break
    reader.close()
    assert {orjson.loads(m.value)["series_id"] for m in got} == {"cell-0|traffic", "cell-1|traffic"}
