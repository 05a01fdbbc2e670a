"""Automatic model choice per series by a rolling-origin backtest on the series' own recent past."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import clone

from forecasting.backtest import backtest
from forecasting.base import Forecaster, PointForecast, steps_per
from forecasting.history import DAY, infer_step


class AutoSelect(Forecaster):
    """Pick, for each series, the candidate with the lowest mean MASE over ``folds`` origins.

    The validation origins sit ``validation_horizon`` steps apart at the end of the history
    (``None``: the requested horizon, or one day in :meth:`fit`). Series whose history is too
    short to hold out even one fold get the first candidate, and the note says so.
    """

    name = "auto"

    def __init__(self, candidates: Sequence[Forecaster] = (), folds: int = 2, validation_horizon: int | None = None) -> None:
        self.candidates = candidates
        self.folds = folds
        self.validation_horizon = validation_horizon

    def _choose(self, frame: pd.DataFrame, horizon: int, level: float) -> dict[str, tuple[int, str]]:
        """Candidate position and note for every column of ``frame``."""
        if not self.candidates:
            raise ValueError("automatic selection needs at least one candidate forecaster")
        day = steps_per(DAY, infer_step(pd.DatetimeIndex(frame.index)))
        n = len(frame)
        origins = [n - horizon * j for j in range(self.folds, 0, -1) if n - horizon * j >= 2 * day]
        if not origins:
            note = f"history too short for a {horizon}-step validation fold: first candidate used"
            return {str(c): (0, note) for c in frame.columns}
        named = {f"{i}": c for i, c in enumerate(self.candidates)}
        scores = backtest(frame, named, origins, horizon, season=day, level=level).scores
        table = scores.pivot_table(index="series", columns="model", values="mase", aggfunc="mean")
        filled = table.reindex(columns=list(named)).fillna(np.inf)
        best = filled.to_numpy().argmin(axis=1)
        chosen = {}
        for series, i in zip(filled.index, best, strict=True):
            mase = filled.loc[series].iloc[i]
            chosen[str(series)] = (int(i), f"auto-selected over {len(origins)} folds (MASE {mase:.3f})")
        return chosen

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        chosen = self._choose(frame, self.validation_horizon or horizon, level)
        out: dict[str, PointForecast] = {}
        for i in sorted({i for i, _ in chosen.values()}):
            columns = [c for c in frame.columns if chosen[str(c)][0] == i]
            forecasts = clone(self.candidates[i]).forecast_many(frame, horizon, level)
            out.update({str(c): forecasts[str(c)].with_note(chosen[str(c)][1]) for c in columns})
        return {str(c): out[str(c)] for c in frame.columns}

    def fit(self, y: pd.Series) -> Self:
        frame = y.to_frame(name="y")
        horizon = self.validation_horizon or steps_per(DAY, infer_step(pd.DatetimeIndex(frame.index)))
        i, self.note_ = self._choose(frame, horizon, 0.9)["y"]
        self.fitted_ = clone(self.candidates[i]).fit(y)
        return self

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return self.fitted_.predict(horizon, level).with_note(self.note_)
