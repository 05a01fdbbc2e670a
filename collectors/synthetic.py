"""Seeded synthetic telemetry with the structure real traffic has, for scale tests and the demo.

Each source gets a base level, a daily cycle (evening peak), a weekly cycle (quieter weekends),
a linear trend, multiplicative noise, occasional bursts, and missing samples. The same seed gives
the same records, so tests can compare against an exact expectation. For telemetry at minutes'
resolution, bursts can last ``burst_steps`` samples and ``level_shift_probability`` adds lasting
level shifts (a reroute, a new customer): both off by default, drawn from a second seeded stream
so that the default series stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from nm_toolkit.schemas import Location, TelemetryRecord, split_series_key


@dataclass(frozen=True)
class SyntheticTelemetry:
    """Parameters of a synthetic network; :meth:`frame` and :meth:`records` generate it."""

    n_sources: int = 20
    periods: int = 24 * 14
    step_seconds: int = 3600
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    metric: str = "traffic"
    unit: str = "MB"
    daily_amplitude: float = 0.5
    weekly_amplitude: float = 0.2
    trend_per_day: float = 0.01
    noise: float = 0.08
    burst_probability: float = 0.01
    missing_probability: float = 0.02
    seed: int = 0
    source_prefix: str = "cell"
    burst_steps: int = 1
    level_shift_probability: float = 0.0
    level_shift_sigma: float = 0.3

    def sources(self) -> list[str]:
        return [f"{self.source_prefix}-{i:04d}" for i in range(self.n_sources)]

    def frame(self) -> pd.DataFrame:
        """Wide frame: UTC DatetimeIndex x one column per source; NaN where a sample is missing."""
        rng = np.random.default_rng(self.seed)
        index = pd.date_range(self.start, periods=self.periods, freq=pd.Timedelta(seconds=self.step_seconds))
        hours = np.asarray(index.hour + index.minute / 60)[:, None]
        days = np.asarray((index - index[0]) / pd.Timedelta(days=1))[:, None]
        weekend = np.asarray(index.day_of_week >= 5)[:, None]
        level = rng.lognormal(mean=4.0, sigma=0.6, size=(1, self.n_sources))
        phase = rng.normal(0, 1.0, size=(1, self.n_sources))
        daily = 1 + self.daily_amplitude * np.sin(2 * np.pi * (hours - 14 - phase) / 24)
        weekly = np.where(weekend, 1 - self.weekly_amplitude, 1.0)
        trend = 1 + self.trend_per_day * days
        noise = rng.lognormal(0, self.noise, size=(self.periods, self.n_sources))
        bursts = np.where(rng.random((self.periods, self.n_sources)) < self.burst_probability, rng.uniform(2, 4), 1.0)
        values = level * daily * weekly * trend * noise * bursts
        missing = rng.random(values.shape) < self.missing_probability
        if self.burst_steps > 1 or self.level_shift_probability > 0:
            values = values * self._bursts_and_shifts(bursts)
        values[missing] = np.nan
        return pd.DataFrame(np.round(values, 3), index=index, columns=self.sources())

    def _bursts_and_shifts(self, bursts: np.ndarray) -> np.ndarray:
        """Multipliers that stretch each burst over ``burst_steps`` samples and add level shifts."""
        rng = np.random.default_rng([self.seed, 1])
        stretched = bursts.copy()
        for lag in range(1, self.burst_steps):  # a burst at t also lifts t+1 .. t+burst_steps-1
            stretched[lag:] = np.maximum(stretched[lag:], bursts[:-lag])
        factor = stretched / bursts
        shifts = np.where(
            rng.random(bursts.shape) < self.level_shift_probability, rng.lognormal(0, self.level_shift_sigma, bursts.shape), 1.0
        )
        return factor * np.cumprod(shifts, axis=0)

    def records(self) -> Iterator[TelemetryRecord]:
        """The non-missing samples as records, in time order."""
        yield from frame_records(self.frame(), self.metric, self.unit)


def frame_records(frame: pd.DataFrame, metric: str | None, unit: str = "") -> Iterator[TelemetryRecord]:
    """Records of a wide frame (DatetimeIndex x sources), time by time, skipping missing values.
    ``metric`` None: the columns are series ids (``SOURCE|METRIC``), each naming its own."""
    keys = {c: (str(c), metric) if metric is not None else split_series_key(str(c)) for c in frame.columns}
    locations = {column: Location(cell=source) for column, (source, _) in keys.items()}
    for ts, row in zip(frame.index.to_pydatetime(), frame.to_numpy(), strict=True):
        for column, value in zip(frame.columns, row, strict=True):
            if not np.isnan(value):
                source, name = keys[column]
                yield TelemetryRecord.model_construct(
                    ts=ts, source=source, metric=name, value=float(value), unit=unit, location=locations[column]
                )


@dataclass(frozen=True)
class SyntheticNetgptLoad:
    """A city's edge sites as the management loop sees the NetGPT services: per site and window,
    the prompts served (``SITE|prompts``), the requests per service class
    (``SITE|demand.<class>.requests``), the requests escalated to the cloud (``SITE|escalated``)
    and the bytes they carried (``SITE|edge_to_cloud_bytes``), the series the edge service reports.

    Prompt volume has the network's structure (:class:`SyntheticTelemetry`: daily and weekly
    cycles, bursts, level shifts); each site has its own service-class mix, and each class its own
    hour of the day (video in the evening, web by day), so what a site asks for moves over the day
    and adapter placement has something to predict. Counts are Poisson / binomial draws.
    """

    n_sites: int = 6
    periods: int = 24 * 14
    step_seconds: int = 3600
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    prompts_per_hour: float = 30_000.0
    classes: tuple[str, ...] = ("video", "gaming", "ar_vr", "voice", "bulk_download", "web")
    escalated_share: tuple[float, float] = (0.3, 0.5)
    bytes_per_request: float = 120.0
    seed: int = 0
    source_prefix: str = "edge"

    def sites(self) -> list[str]:
        """The edge sites' names (the sources of :meth:`frame`)."""
        return SyntheticTelemetry(n_sources=self.n_sites, source_prefix=self.source_prefix).sources()

    def policy_world(self) -> dict[str, dict[str, list[str]] | dict[str, str]]:
        """The ``[policy]`` settings this world is laid out by: each site reports its own demand,
        and each service class has an adapter of its own (``policy.sites``, ``policy.class_adapters``)."""
        return {"sites": {site: [site] for site in self.sites()}, "class_adapters": {c: c for c in self.classes}}

    def frame(self) -> pd.DataFrame:
        """Wide frame: one column per ``SITE|METRIC`` series, counts per window."""
        rng = np.random.default_rng([self.seed, 2])
        volume = SyntheticTelemetry(
            n_sources=self.n_sites, periods=self.periods, step_seconds=self.step_seconds, start=self.start, seed=self.seed,
            missing_probability=0.0, source_prefix=self.source_prefix, burst_steps=max(1, 3600 // self.step_seconds),
            level_shift_probability=0.002,
        ).frame()  # fmt: skip
        rate = volume / volume.mean() * self.prompts_per_hour * self.step_seconds / 3600
        hours = np.asarray(volume.index.hour + volume.index.minute / 60)[:, None]
        peaks = rng.uniform(0, 24, size=(1, len(self.classes)))  # each class's busiest hour
        daily = 1 + 0.6 * np.cos(2 * np.pi * (hours - peaks) / 24)  # (time, class)
        columns: dict[str, np.ndarray] = {}
        for site in volume.columns:
            prompts = rng.poisson(rate[site].to_numpy())
            mix = rng.dirichlet(np.full(len(self.classes), 0.8))[None, :] * daily
            mix /= mix.sum(axis=1, keepdims=True)
            demand = np.stack([rng.multinomial(n, p) for n, p in zip(prompts, mix, strict=True)])
            escalated = rng.binomial(prompts, rng.uniform(*self.escalated_share))
            columns[f"{site}|prompts"] = prompts
            for k, service_class in enumerate(self.classes):
                columns[f"{site}|demand.{service_class}.requests"] = demand[:, k]
            columns[f"{site}|escalated"] = escalated
            columns[f"{site}|edge_to_cloud_bytes"] = np.round(escalated * rng.normal(self.bytes_per_request, 10.0, size=len(prompts)))
        return pd.DataFrame(columns, index=volume.index).astype(float)
