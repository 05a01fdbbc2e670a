"""Short-horizon forecasting at 5-minute resolution: accuracy, intervals and the cost of a rolling backtest.

Data: a wide CSV of 5-minute series (``--input``, e.g. the Abilene OD flows in
``../shared/data/abilene_od_5min.csv``), else seeded synthetic telemetry
(``collectors.synthetic.SyntheticTelemetry``) at 5 minutes, 132 series, two weeks from a Monday,
bursty (bursts lasting 30 minutes) with lasting level shifts.
Protocol: the first week is history; from every hour of the second week (168 origins) forecast
the next hour (12 steps) with all data before the origin. MAE; MASE scaled by the in-sample
one-step naive (last-value) error; coverage of 90 % intervals. The backtest runs twice: refitting
every model at every origin, and with incremental updates (refit once a day, the global GBM once a
week, ``update()`` with the new hour in between); "drift" is the mean absolute difference between the two runs' forecasts,
relative to the refit MAE. Seconds are wall time of each whole backtest, scoring included, and per
model the fit + update + forecast time.

    OMP_NUM_THREADS=1 python bench/forecast_short.py [--input FILE | --series 132] [--refit-every 24] [--global-refit-every 168] [--models ...] [--update-only]

The backtest is :func:`forecasting.backtest.backtest` with :func:`~forecasting.backtest.refit_schedule`,
the same call ``nmt forecast backtest --rolling`` makes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from collectors.synthetic import SyntheticTelemetry
from forecasting.backtest import (
    backtest,
    refit_schedule,
    rolling_origins,
    with_baseline,
)
from forecasting.data import load_series_frame
from forecasting.registry import make_model

STEP = pd.Timedelta(minutes=5)
DAY_STEPS = 288
MODELS = ("last_value", "drift", "ses", "holt", "snaive_daily", "seasonal_mean", "ar", "auto_short", "auto", "gbm_short")


def synthetic_5min(n_series: int, seed: int, days: int = 14) -> pd.DataFrame:
    return SyntheticTelemetry(
        n_sources=n_series,
        periods=days * DAY_STEPS,
        step_seconds=300,
        noise=0.15,
        burst_probability=0.004,
        burst_steps=6,
        level_shift_probability=1 / DAY_STEPS,  # about one lasting shift a day per series
        level_shift_sigma=0.25,
        missing_probability=0.01,
        seed=seed,
        source_prefix="link",
    ).frame()


def run(
    frame: pd.DataFrame, models: tuple[str, ...], refit_every: int | None, global_refit_every: int | None
) -> tuple[pd.DataFrame, dict[str, float], float]:
    origins = rolling_origins(len(frame), 7 * DAY_STEPS, 12, 12)
    chosen = with_baseline({name: make_model(name, STEP) for name in models})
    schedule = refit_schedule(chosen, refit_every, global_refit_every)
    started = time.perf_counter()
    result = backtest(frame, chosen, origins, 12, season=1, level=0.9, refit_every=schedule, keep_forecasts=True)
    return result.scores, result.seconds, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="wide CSV of 5-minute series (default: synthetic telemetry)")
    parser.add_argument("--series", type=int, default=132, help="synthetic series (without --input)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit-every", type=int, default=24, help="origins (hours) between full refits in the update run")
    parser.add_argument("--global-refit-every", type=int, default=168, help="the same for the global GBM (one fit over all series)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--update-only", action="store_true", help="skip the refit-at-every-origin run (slow: minutes at 132 series)")
    args = parser.parse_args()
    models = tuple(m for m in args.models.split(",") if m)
    frame = load_series_frame(args.input)[0] if args.input else synthetic_5min(args.series, args.seed)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    updated, update_seconds, update_wall = run(frame, models, args.refit_every, args.global_refit_every)
    print(f"update, refit every {args.refit_every} origins (global models every {args.global_refit_every}): {update_wall:.1f} s", flush=True)
    if args.update_only:
        refit, refit_seconds, refit_wall = updated, dict.fromkeys(update_seconds, float("nan")), float("nan")
    else:
        refit, refit_seconds, refit_wall = run(frame, models, None, None)
        print(f"refit at every origin: {refit_wall:.1f} s", flush=True)

    keys = ["model", "series", "origin"]
    paired = refit.merge(updated[keys + ["mae", "coverage", "forecast"]], on=keys, suffixes=("", "_update"))
    paired["gap"] = [float(np.mean(np.abs(a - b))) for a, b in zip(paired["forecast"], paired["forecast_update"], strict=True)]
    table = paired.groupby("model", sort=False).agg(
        mae=("mae", "mean"), mase=("mase", "mean"), coverage=("coverage", "mean"),
        mae_update=("mae_update", "mean"), coverage_update=("coverage_update", "mean"), gap=("gap", "mean"),
    )
    base = table.loc["last_value", "mae"] if "last_value" in table.index else np.nan
    table.insert(1, "mae_vs_last", table["mae"] / base)
    table["drift_pct"] = 100 * table.pop("gap") / table["mae"]
    table["s_refit"] = [refit_seconds[m] for m in table.index]
    table["s_update"] = [update_seconds[m] for m in table.index]
    n_origins = refit["origin"].nunique()
    print(f"\n{frame.shape[1]} series x {n_origins} origins, 12-step (1 hour) horizon, 90 % intervals")
    print("| model | MAE | MAE / last value | MASE | coverage | MAE (update) | coverage (update) | drift % | s refit | s update |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in table.iterrows():
        print(f"| {name} | {r.mae:.3f} | {r.mae_vs_last:.3f} | {r.mase:.3f} | {r.coverage:.3f} | {r.mae_update:.3f} | "
              f"{r.coverage_update:.3f} | {r.drift_pct:.2f} | {r.s_refit:.1f} | {r.s_update:.1f} |")
    print(f"| **whole backtest, wall** | | | | | | | | {refit_wall:.1f} | {update_wall:.1f} |")


if __name__ == "__main__":
    main()
