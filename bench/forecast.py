"""Forecast accuracy and cost of every model, side by side, in one run on the Milan cells.

Protocol (Ferreira et al., IEEE Access 2023): train on the first 55 days, forecast the next 7
(168 hours); MASE uses the in-sample daily seasonal naive as its yardstick, averaged over cells.
SARIMA costs seconds per series, so it runs on the first ``--sarima-cells`` cells only, and every
model is also reported on that subset. The ``llm`` model (the serving edge model with its ``trend``
adapter, :mod:`forecasting.llm`) costs more again: with ``--llm-cells N`` it runs on the first N
cells, next to every other model on the same cells (the SARIMA subset when the counts match). It
needs the adapter trained first (``nmt forecast train-trend`` on days 1-55 only, or the score
leaks); ``bench/trend_lora.py`` trains it that way and compares it with the digit-vocabulary model.
A second table scores the cheap models on the week
*before* the test week (days 48-55), so the choice of default model is not made on the test set.

Holidays are Italy's by default (the data are Milan's): ``--holidays none`` scores the week without them.
The breaks are Lombardy's Christmas school break (23 December to 6 January): ``--breaks none`` leaves it out.

    OMP_NUM_THREADS=1 python bench/forecast.py [--data ../shared/data/milan_cdr_hourly.csv] [--sarima-cells 15] [--llm-cells 0] [--holidays IT] [--breaks 12-23..01-06]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import pandas as pd

from forecasting.backtest import backtest, fixed_origin
from forecasting.data import load_series_frame
from forecasting.registry import make_model
from nm_toolkit.config import ForecastSettings, Settings

DATA = Path("../shared/data/milan_cdr_hourly.csv")  # relative to the repository root, as in the issue
ALL_CELL_MODELS = ("snaive_daily", "snaive_weekly", "seasonal_mean", "day_type", "ets", "gbm", "ensemble", "auto")
VALIDATION_MODELS = ("snaive_weekly", "seasonal_mean", "day_type", "gbm", "ensemble")


def score(frame: pd.DataFrame, step: pd.Timedelta, models: tuple[str, ...], train_days: int, settings: Settings) -> pd.DataFrame:
    """Each model once from day ``train_days``, 168 hours ahead; with a holiday calendar, the
    ensemble without it too, and with breaks, day_type without them (what each was before, in the
    same run)."""
    origins = fixed_origin(len(frame), train_days * 24, 168)
    chosen = {name: make_model(name, step, settings) for name in models}
    if settings.forecast.holidays and "ensemble" in models:
        chosen["ensemble, no holidays"] = make_model("ensemble", step, settings.model_copy(update={"forecast": ForecastSettings()}))
    if settings.forecast.breaks and "day_type" in models:
        no_breaks = settings.forecast.model_copy(update={"breaks": []})
        chosen["day_type, no breaks"] = make_model("day_type", step, settings.model_copy(update={"forecast": no_breaks}))
    result = backtest(frame, chosen, origins, 168, season=24, level=0.9, on_step=lambda m, _: print(f"  done {m}", flush=True))
    table = result.summary()
    table.insert(0, "cells", frame.shape[1])
    table.attrs["llm_dropped"], table.attrs["llm_fallbacks"] = llm_sample_failures(result.scores)
    return table


def llm_sample_failures(scores: pd.DataFrame) -> tuple[int, int]:
    """Malformed LLM samples dropped and series that fell back to the seasonal naive, from the notes."""
    from forecasting.llm import sample_failures

    return sample_failures(scores.loc[scores["model"] == "llm", "note"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sarima-cells", type=int, default=15)
    parser.add_argument("--llm-cells", type=int, default=0, help="cells the llm model (edge model + trained trend adapter) runs on; 0 leaves it out")
    parser.add_argument("--holidays", default="IT", help="the data's holiday calendar (Milan: IT); 'none' for weekends only")
    parser.add_argument("--breaks", default="12-23..01-06", help="comma-separated yearly breaks MM-DD..MM-DD (Milan: the Christmas school break); 'none'")
    args = parser.parse_args()
    breaks = [] if args.breaks == "none" else args.breaks.split(",")
    settings = Settings(forecast=ForecastSettings(holidays=None if args.holidays == "none" else args.holidays, breaks=breaks))
    frame, step = load_series_frame(args.data)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    subset = frame.iloc[:, : args.sarima_cells]
    with_llm = ("llm",) if args.llm_cells == args.sarima_cells else ()
    test_all = score(frame, step, ALL_CELL_MODELS, 55, settings)
    test_subset = score(subset, step, ALL_CELL_MODELS + ("sarima",) + with_llm, 55, settings)
    test_llm = score(frame.iloc[:, : args.llm_cells], step, ALL_CELL_MODELS + ("llm",), 55, settings) if args.llm_cells and not with_llm else None
    validation = score(frame.iloc[: 55 * 24], step, VALIDATION_MODELS, 48, settings)
    pd.set_option("display.width", 160)
    print("\n## Test week (train days 1-55, score days 56-62), all cells")
    print(test_all.round(3).to_string())
    print(f"\n## Test week, first {subset.shape[1]} cells (SARIMA(1,0,1)(1,1,1,24) costs seconds per series, so only these)")
    print(test_subset.round(3).to_string())
    if test_llm is not None:
        print(f"\n## Test week, first {args.llm_cells} cells, with the LLM forecaster")
        print(test_llm.round(3).to_string())
    if args.llm_cells:
        scored = test_llm if test_llm is not None else test_subset
        print(f"\nLLM seconds_per_series above cover loading the edge model with its trend adapter (trained once, "
              f"not here) and sampling; malformed samples dropped: {scored.attrs['llm_dropped']}, series on seasonal-naive fallback: {scored.attrs['llm_fallbacks']}")
    print("\n## Validation week (train days 1-48, score days 49-55), all cells: the default model is chosen here")
    print(validation.round(3).to_string())


if __name__ == "__main__":
    main()
