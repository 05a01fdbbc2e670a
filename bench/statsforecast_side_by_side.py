"""statsforecast next to statsmodels for the ETS and SARIMA forecasters, same cells, same protocol.

Why this is a bench and not a dependency: statsforecast 2.x requires pandas < 3 (the project runs
pandas 3), so it is measured from an isolated install and only adopted if it wins:

    pip install --target /tmp/sfpkgs statsforecast
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/sfpkgs:. python bench/statsforecast_side_by_side.py [--cells 15]

Protocol as ``bench/forecast.py`` (Milan hourly, train days 1-55, forecast 168 hours once, MASE
scaled by the in-sample daily seasonal naive, 90 % intervals), one series at a time for both
libraries; seconds are fit + forecast per series. The first statsforecast fit is timed on its own
line (any compilation or import warm-up), not in the per-series figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting import metrics
from forecasting.data import load_series_frame
from forecasting.history import clean_history
from forecasting.statistical import ETS, SARIMA

DATA = Path("../shared/data/milan_cdr_hourly.csv")
TRAIN, HORIZON, DAY = 55 * 24, 168, 24


def statsmodels_forecast(kind: str, y: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model = ETS(DAY) if kind == "ets" else SARIMA(season_length=DAY)
    fc = model.fit(y).predict(HORIZON, 0.9)
    return fc.mean, fc.lower, fc.upper


def statsforecast_forecast(kind: str, y: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from statsforecast.models import ARIMA, AutoETS

    model = AutoETS(season_length=DAY, model="ANA") if kind == "ets" else ARIMA(order=(1, 0, 1), seasonal_order=(1, 1, 1), season_length=DAY)
    clean, _ = clean_history(y)  # the repair statsmodels' forecasters get too
    out = model.fit(clean.to_numpy(dtype=float)).predict(HORIZON, level=[90])
    return out["mean"], out["lo-90"], out["hi-90"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cells", type=int, default=15)
    args = parser.parse_args()
    frame, _ = load_series_frame(args.data)
    frame = frame.iloc[:, : args.cells]
    import statsforecast

    started = time.perf_counter()
    statsforecast_forecast("ets", frame.iloc[:TRAIN, 0])
    statsforecast_forecast("sarima", frame.iloc[:TRAIN, 0])
    print(f"statsforecast {statsforecast.__version__}, pandas {pd.__version__}: first fits (warm-up) {time.perf_counter() - started:.1f} s")
    print(f"\nMilan, first {frame.shape[1]} cells, train days 1-55, 168 hours ahead, 90 % intervals")
    print("| model | library | MAE | MASE | coverage | s / series |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, label in (("ets", "ETS(A,N,A)"), ("sarima", "SARIMA(1,0,1)(1,1,1,24)")):
        for library, forecast in (("statsmodels", statsmodels_forecast), ("statsforecast", statsforecast_forecast)):
            maes, mases, covers, seconds = [], [], [], 0.0
            for column in frame.columns:
                history, actual = frame[column].iloc[:TRAIN], frame[column].iloc[TRAIN : TRAIN + HORIZON].to_numpy()
                started = time.perf_counter()
                mean, lower, upper = forecast(kind, history)
                seconds += time.perf_counter() - started
                maes.append(metrics.mae(actual, mean))
                mases.append(metrics.mase(actual, mean, history.to_numpy(), DAY))
                covers.append(metrics.coverage(actual, lower, upper))
            print(f"| {label} | {library} | {np.mean(maes):.3f} | {np.mean(mases):.3f} | {np.mean(covers):.3f} | {seconds / frame.shape[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
