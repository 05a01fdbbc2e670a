"""Milan hourly (issue 24): do cross-cell, low-rank profiles beat each cell's own seasonal profile?

The week ahead from one origin, as `bench/forecast.py` scores it (MASE against each cell's in-sample
daily seasonal naive), for the test week (origin after day 55) and the validation week before it
(origin after day 48). Each model forecasts a cell from the history before the origin:

* ``snaive_weekly``: the last week again (the baseline printed beside the others);
* ``daily_mean_d`` / ``daily_median_d``: the mean or median day of the last d days, repeated;
* ``weekly_mean_w``: the mean of the last w weeks;
* ``lowrank_daily_d_k`` / ``lowrank_weekly_w_k``: those profiles for all cells at once (cells x hours,
  each row divided by its mean), cut to their first k singular components and scaled back: a cell's
  profile borrows the shape that the city's cells share, and its noise is dropped;
* ``lowrank_time_d_k``: the last d days of every cell (cells x hours) cut to k components; each
  component's future is its own mean day of the last week.

    OMP_NUM_THREADS=1 python bench/milan_profiles.py [--data ../shared/data/milan_cdr_hourly.csv]

Pure numpy, seconds. A rule that picks on the validation week is printed with what it picks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "milan_cdr_hourly.csv"
DAY, WEEK, TRAIN_DAYS = 24, 168, 55


def daily(history: np.ndarray, days: int, agg: Callable[..., np.ndarray] = np.mean) -> np.ndarray:
    """(cells, 24): the mean (or ``agg``) day of the last ``days`` days."""
    return agg(history[:, -days * DAY :].reshape(len(history), days, DAY), axis=1)


def weekly(history: np.ndarray, weeks: int) -> np.ndarray:
    """(cells, 168): the mean week of the last ``weeks`` weeks."""
    return history[:, -weeks * WEEK :].reshape(len(history), weeks, WEEK).mean(axis=1)


def low_rank(profiles: np.ndarray, k: int) -> np.ndarray:
    """``profiles`` (cells x steps) cut to ``k`` singular components of their shapes (rows over their means)."""
    level = np.maximum(profiles.mean(axis=1, keepdims=True), 1e-9)
    u, s, vt = np.linalg.svd(profiles / level, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k] * level


def low_rank_time(history: np.ndarray, days: int, k: int) -> np.ndarray:
    """(cells, 168): the last ``days`` days cut to ``k`` components, each carried on by its mean day of the last week."""
    window = history[:, -days * DAY :]
    level = np.maximum(window.mean(axis=1, keepdims=True), 1e-9)
    u, s, vt = np.linalg.svd(window / level, full_matrices=False)
    factors = np.stack([f[-7 * DAY :].reshape(7, DAY).mean(axis=0) for f in vt[:k]])
    return np.tile((u[:, :k] * s[:k]) @ factors, 7) * level


def models() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> history (cells x hours) -> the week ahead (cells x 168)."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {"snaive_weekly": lambda h: h[:, -WEEK:]}
    for d in (7, 14, 28):
        out[f"daily_mean_{d}"] = lambda h, d=d: np.tile(daily(h, d), 7)
        out[f"daily_median_{d}"] = lambda h, d=d: np.tile(daily(h, d, np.median), 7)
        for k in (2, 3, 5):
            out[f"lowrank_daily_{d}_{k}"] = lambda h, d=d, k=k: np.tile(low_rank(daily(h, d), k), 7)
    for w in (3, 4, 6):
        out[f"weekly_mean_{w}"] = lambda h, w=w: weekly(h, w)
        for k in (3, 5, 8):
            out[f"lowrank_weekly_{w}_{k}"] = lambda h, w=w, k=k: low_rank(weekly(h, w), k)
    for d in (14, 28):
        for k in (2, 3, 5):
            out[f"lowrank_time_{d}_{k}"] = lambda h, d=d, k=k: low_rank_time(h, d, k)
    return out


def mase(values: np.ndarray, origin: int, forecast: np.ndarray) -> float:
    """Mean over cells of the week's MAE over the in-sample daily seasonal naive's."""
    history, actual = values[:, :origin], values[:, origin : origin + WEEK]
    scale = np.abs(history[:, DAY:] - history[:, :-DAY]).mean(axis=1)
    return float((np.abs(actual - forecast).mean(axis=1) / scale).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    values = pd.read_csv(args.data, index_col=0).to_numpy(dtype=float).T  # cells x hours
    test, validation = TRAIN_DAYS * DAY, TRAIN_DAYS * DAY - WEEK
    rows = []
    for name, model in models().items():
        started = time.perf_counter()
        score_test = mase(values, test, model(values[:, :test]))
        seconds = (time.perf_counter() - started) / len(values)
        rows.append({"model": name, "validation": mase(values, validation, model(values[:, :validation])), "test": score_test,
                     "s_per_series": seconds})  # fmt: skip
    table = pd.DataFrame(rows).set_index("model").sort_values("validation")
    print(f"{args.data.name}: {len(values)} cells, MASE of the week ahead (baseline snaive_weekly in the same run)")
    print(table.round({"validation": 3, "test": 3, "s_per_series": 6}).to_string())
    chosen = table.index[0]
    print(f"\nchosen on the validation week: {chosen}, test {table.loc[chosen, 'test']:.3f} "
          f"(snaive_weekly {table.loc['snaive_weekly', 'test']:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
