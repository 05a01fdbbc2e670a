"""Forecast combination: the (weighted) mean of several models' forecasts.

Combining forecasts of models that err differently is one of the most reliable gains in
forecasting (the M-competitions' lesson); intervals are combined by averaging the members'
bounds (Vincentization, i.e. averaging quantiles), which keeps them calibrated when the members are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import clone

from forecasting.base import Forecaster, ManyFitted, PointForecast


class Combination(Forecaster):
    """Mean of ``members``' point forecasts and interval bounds, weighted by ``weights`` (relative;
    None: equal)."""

    name = "combination"

    def __init__(self, members: Sequence[Forecaster] = (), weights: Sequence[float] | None = None) -> None:
        self.members = members
        self.weights = weights

    @property
    def incremental(self) -> bool:  # type: ignore[override]
        """Updates without refitting when every member does."""
        return all(m.incremental for m in self.members)

    @property
    def global_model(self) -> bool:  # type: ignore[override]
        """Learns across series when any member does."""
        return any(m.global_model for m in self.members)

    def fit(self, y: pd.Series) -> Self:
        if not self.members:
            raise ValueError("a combination needs at least one member forecaster")
        self.fitted_ = [clone(m).fit(y) for m in self.members]
        return self

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return combine([m.predict(horizon, level) for m in self.fitted_], self.weights)

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        if not self.members:
            raise ValueError("a combination needs at least one member forecaster")
        each = [m.forecast_many(frame, horizon, level) for m in self.members]
        return {c: combine([forecasts[c] for forecasts in each], self.weights) for c in each[0]}

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> ManyFitted:
        if not self.members:
            raise ValueError("a combination needs at least one member forecaster")
        return _CombinedMany([m.fit_many(frame, horizon) for m in self.members], self.weights)


class _CombinedMany(ManyFitted):
    """Fitted members, each updated with the same rows; forecasts combined as in :func:`combine`."""

    def __init__(self, members: list[ManyFitted], weights: Sequence[float] | None) -> None:
        self.members = members
        self.weights = weights

    def update(self, new_points: pd.DataFrame) -> _CombinedMany:
        for member in self.members:
            member.update(new_points)
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        each = [m.predict_many(horizon, level) for m in self.members]
        return {c: combine([forecasts[c] for forecasts in each], self.weights) for c in each[0]}


def combine(forecasts: Sequence[PointForecast], weights: Sequence[float] | None = None) -> PointForecast:
    """The mean of ``forecasts`` (same index and level) weighted by ``weights`` (None: equal),
    named after its members, notes joined."""
    first = forecasts[0]
    name = "mean(" + ",".join(f.model for f in forecasts) + ")"
    notes = "; ".join(dict.fromkeys(f"{f.model}: {f.note}" for f in forecasts if f.note))
    return PointForecast(
        first.index,
        np.average([f.mean for f in forecasts], axis=0, weights=weights),
        np.average([f.lower for f in forecasts], axis=0, weights=weights),
        np.average([f.upper for f in forecasts], axis=0, weights=weights),
        first.level,
        name,
        notes,
    )
