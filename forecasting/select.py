"""Automatic model choice per series by a rolling-origin backtest on the series' own recent past."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import clone

from forecasting.backtest import backtest
from forecasting.base import Forecaster, ManyFitted, PointForecast, steps_per
from forecasting.history import DAY, infer_step


class AutoSelect(Forecaster):
    """Pick, for each series, the candidate with the lowest mean absolute error over validation folds.

    The validation origins sit ``validation_horizon`` steps apart at the end of the history
    (``None``: the requested horizon, or one day in :meth:`fit`), ``folds`` of them. The first
    candidate is the baseline: ties go to it, so another candidate is chosen only where it beat the
    baseline on that series' own folds (the registry's ``auto`` puts the last value first, so it
    never picks a model that loses to the last value there). Series whose history is too short to
    hold out even one fold get the first candidate, and the note says so.

    At horizons of ``short_horizon_hours`` or less, ``short_candidates`` (when given) replace the
    candidates, and the folds are ``short_folds`` (72: three days of hourly folds one hour ahead; two one-hour
    folds are far too few to tell models apart on bursty minutes-scale traffic, and on the first
    week of the Abilene flows three days chose better than one); those candidates are fitted at
    the first fold and advanced by ``update`` through the others.
    """

    name = "auto"

    def __init__(
        self,
        candidates: Sequence[Forecaster] = (),
        folds: int = 2,
        validation_horizon: int | None = None,
        short_candidates: Sequence[Forecaster] = (),
        short_horizon_hours: float = 6.0,
        refit_every: int | None = None,
        short_folds: int = 72,
    ) -> None:
        self.candidates = candidates
        self.folds = folds
        self.validation_horizon = validation_horizon
        self.short_candidates = short_candidates
        self.short_horizon_hours = short_horizon_hours
        self.refit_every = refit_every
        self.short_folds = short_folds

    @property
    def incremental(self) -> bool:  # type: ignore[override]
        """Updates without refitting (or choosing again) when every candidate does."""
        return all(c.incremental for c in [*self.candidates, *self.short_candidates])

    def _short(self, step: pd.Timedelta, horizon: int) -> bool:
        return bool(self.short_candidates) and step * horizon <= pd.Timedelta(hours=self.short_horizon_hours)

    def _considered(self, step: pd.Timedelta, horizon: int) -> list[Forecaster]:
        """The candidates, or ``short_candidates`` when ``horizon`` steps of ``step`` reach no further
        than ``short_horizon_hours`` (the day-ahead models have little to say an hour ahead, and a
        global model refitted at every fold would cost more than the whole backtest)."""
        return list(self.short_candidates if self._short(step, horizon) else self.candidates)

    def _choose(self, frame: pd.DataFrame, horizon: int, level: float) -> dict[str, tuple[int, str]]:
        """Candidate position (in :meth:`_considered`) and note for every column of ``frame``.

        ``refit_every`` None fits each candidate afresh at every validation fold; k fits at the
        first fold and every k-th, advancing the fitted candidates with ``update`` in between.
        """
        if not self.candidates:
            raise ValueError("automatic selection needs at least one candidate forecaster")
        step = infer_step(pd.DatetimeIndex(frame.index))
        day = steps_per(DAY, step)
        n = len(frame)
        short = self._short(step, horizon)
        folds, refit_every = (self.short_folds, self.short_folds) if short else (self.folds, self.refit_every)
        origins = [n - horizon * j for j in range(folds, 0, -1) if n - horizon * j >= 2 * day]
        if not origins:
            note = f"history too short for a {horizon}-step validation fold: first candidate used"
            return {str(c): (0, note) for c in frame.columns}
        named = {f"{i}": c for i, c in enumerate(self._considered(step, horizon))}
        scores = backtest(frame, named, origins, horizon, season=day, level=level, refit_every=refit_every).scores
        table = scores.pivot_table(index="series", columns="model", values="mae", aggfunc="mean")
        filled = table.reindex(columns=list(named)).fillna(np.inf)
        best = filled.to_numpy().argmin(axis=1)  # the first of equals: ties keep the baseline
        baseline = named["0"].name
        chosen = {}
        for series, i in zip(filled.index, best, strict=True):
            ratio = filled.loc[series].iloc[i] / filled.loc[series].iloc[0]
            versus = f", MAE {ratio:.3f}x {baseline}'s" if i and np.isfinite(ratio) else ""
            chosen[str(series)] = (int(i), f"auto-selected {named[str(i)].name} over {len(origins)} folds{versus}")
        return chosen

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        validation_horizon = self.validation_horizon or horizon
        chosen = self._choose(frame, validation_horizon, level)
        considered = self._considered(infer_step(pd.DatetimeIndex(frame.index)), validation_horizon)
        out: dict[str, PointForecast] = {}
        for i in sorted({i for i, _ in chosen.values()}):
            columns = [c for c in frame.columns if chosen[str(c)][0] == i]
            forecasts = clone(considered[i]).forecast_many(frame, horizon, level)
            out.update({str(c): forecasts[str(c)].with_note(chosen[str(c)][1]) for c in columns})
        return {str(c): out[str(c)] for c in frame.columns}

    def fit(self, y: pd.Series) -> Self:
        frame = y.to_frame(name="y")
        horizon = self.validation_horizon or steps_per(DAY, infer_step(pd.DatetimeIndex(frame.index)))
        i, self.note_ = self._choose(frame, horizon, 0.9)["y"]
        self.fitted_ = clone(self._considered(infer_step(pd.DatetimeIndex(frame.index)), horizon)[i]).fit(y)
        return self

    def update(self, new_points: pd.Series) -> Self:
        """Advance the chosen model (the choice itself is revisited at the next fit)."""
        self.fitted_.update(new_points)
        return self

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> ManyFitted:
        """Choose per series, then fit each chosen candidate on its own columns only."""
        validation_horizon = self.validation_horizon or horizon or steps_per(DAY, infer_step(pd.DatetimeIndex(frame.index)))
        chosen = self._choose(frame, validation_horizon, 0.9)
        considered = self._considered(infer_step(pd.DatetimeIndex(frame.index)), validation_horizon)
        groups = {}
        for i in sorted({i for i, _ in chosen.values()}):
            columns = [c for c in frame.columns if chosen[str(c)][0] == i]
            groups[tuple(columns)] = clone(considered[i]).fit_many(frame[columns], horizon)
        return _SelectedMany(groups, {c: note for c, (_, note) in chosen.items()}, [str(c) for c in frame.columns])

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return self.fitted_.predict(horizon, level).with_note(self.note_)


class _SelectedMany(ManyFitted):
    """Each series' chosen model, fitted on the columns that chose it, updated with their rows."""

    def __init__(self, groups: dict[tuple, ManyFitted], notes: dict[str, str], columns: list[str]) -> None:
        self.groups = groups
        self.notes = notes
        self.columns = columns

    def update(self, new_points: pd.DataFrame) -> _SelectedMany:
        for columns, fitted in self.groups.items():
            fitted.update(new_points[list(columns)])
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        out: dict[str, PointForecast] = {}
        for fitted in self.groups.values():
            out.update({str(c): fc.with_note(self.notes[str(c)]) for c, fc in fitted.predict_many(horizon, level).items()})
        return {c: out[c] for c in self.columns}
