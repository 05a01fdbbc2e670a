"""Small builders shared by the policy and controller tests (no tests of its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import Forecast
from policies import PolicyContext

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def forecast(series_id: str, upper: list[float], mean: list[float] | None = None) -> Forecast:
    mean = mean if mean is not None else [u * 0.8 for u in upper]
    return Forecast(
        series_id=series_id, model="seasonal_naive", issued_at=NOW, step_seconds=3600,
        start=NOW + timedelta(hours=1), mean=mean, lower=[0.0] * len(mean), upper=upper,
    )


def context(**fields: object) -> PolicyContext:
    settings = fields.pop("settings", PolicySettings(default_capacity=100.0))
    return PolicyContext(now=NOW, settings=settings, **fields)  # type: ignore[arg-type]
