"""The forecast service's round time as history grows: incremental updates next to a full refit every round.

Data: the seeded 5-minute synthetic telemetry of ``bench/forecast_short.py`` (bursts, level shifts,
1 % missing), ``--series`` series. Both services read the same stores' worth of windows: the history
starts at ``--first-days`` and grows by ``--round-minutes`` of windows before every round, to
``--days``. The *incremental* service runs the configured schedule (``refit_every_rounds``: a full
refit every ``--refit-every`` rounds, ``update()`` with the new windows in between); the *baseline*
refits on the whole stored history every round (``refit_every_rounds`` 1). The baseline's rounds
do not depend on each other, so it is timed every ``--refit-every`` rounds only, to bound the run.
Round time is :meth:`ForecastService.forecast_round` alone (store reads, fits or updates, forecasts,
publishing to a counting emitter, storing the forecasts, retention); ``max_history`` is raised
above ``--days`` so that the stored history really grows. Writes ``bench/figures/forecast_service_rounds_MODEL.png``.

    OMP_NUM_THREADS=1 python bench/forecast_service_rounds.py [--series 132] [--days 15] [--model seasonal_mean]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.forecast_short import DAY_STEPS, synthetic_5min  # noqa: E402
from forecasting.service import ForecastService  # noqa: E402
from forecasting.store import ForecastStore  # noqa: E402
from nm_toolkit.config import load_settings  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"


class CountingEmitter:
    """Stands in for the runtime's emitter: counts what a round publishes."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, value: object, key: str | None = None) -> None:
        self.sent += 1


def service(model: str, refit_every: int, max_history: int) -> ForecastService:
    settings = load_settings(
        forecast={"horizon": 12, "min_history": DAY_STEPS, "max_history": max_history},
        forecast_service={"model": model, "refit_every_rounds": refit_every},
    )
    cfg = settings.forecast_service
    return ForecastService(
        cfg, settings.forecast, series_topic="series", forecasts_topic="forecasts", store=ForecastStore(None)
    )  # fmt: skip


def windows(frame: pd.DataFrame, rows: slice) -> list[tuple[str, object, int, float]]:
    """The store's points for ``rows`` of the wide frame (missing windows never arrived)."""
    block = frame.iloc[rows]
    return [
        (str(column), time.to_pydatetime(), 300, float(value))
        for column in block.columns
        for time, value in block[column].items()
        if np.isfinite(value)
    ]


def timed_round(svc: ForecastService, now: pd.Timestamp) -> float:
    started = time.perf_counter()
    svc.forecast_round(CountingEmitter(), now=now.to_pydatetime())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=132)
    parser.add_argument("--days", type=int, default=15)
    parser.add_argument("--first-days", type=int, default=1)
    parser.add_argument("--round-minutes", type=int, default=60, help="new windows (in minutes of data) before each round")
    parser.add_argument("--refit-every", type=int, default=12, help="rounds between full refits of the incremental service")
    parser.add_argument("--model", default="seasonal_mean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = synthetic_5min(args.series, args.seed, days=args.days)
    per_round = args.round_minutes // 5
    max_history = args.days * DAY_STEPS + per_round
    incremental = service(args.model, args.refit_every, max_history)
    baseline = service(args.model, 1, max_history)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}; model {args.model}, {args.series} series", flush=True)

    first = args.first_days * DAY_STEPS
    for svc in (incremental, baseline):
        svc.store.put_points(windows(frame, slice(0, first)))
    records = []
    for k, end in enumerate(range(first, len(frame) + 1, per_round)):
        if end > first:
            new = windows(frame, slice(end - per_round, end))
            incremental.store.put_points(new)
            baseline.store.put_points(new)
        now = frame.index[end - 1] + timedelta(minutes=5)
        refits = incremental.counters.refits
        seconds = timed_round(incremental, now)
        kind = "refit" if incremental.counters.refits > refits else "update"
        records.append({"days": end / DAY_STEPS, "service": f"incremental ({kind})", "seconds": seconds})
        if k % args.refit_every == 0:
            records.append({"days": end / DAY_STEPS, "service": "full refit every round", "seconds": timed_round(baseline, now)})
    table = pd.DataFrame(records)

    table["history"] = (table["days"] // 2 * 2).astype(int)
    summary = table.pivot_table(index="history", columns="service", values="seconds", aggfunc="median") * 1000
    counts = table.groupby("service")["seconds"].agg(["count", "sum"])
    print(f"\nmedian round time in ms by stored history (days, 2-day bins); rounds every {args.round_minutes} min of data")
    print("| history (days) | " + " | ".join(summary.columns) + " |")
    print("|---:|" + "---:|" * len(summary.columns))
    for days, row in summary.iterrows():
        print(f"| {days}-{days + 2} | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    print("\n| service | rounds | seconds in rounds |")
    print("|---|---:|---:|")
    for name, row in counts.iterrows():
        print(f"| {name} | {row['count']:.0f} | {row['sum']:.1f} |")
    plot(table, args)


def plot(table: pd.DataFrame, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {
        "incremental (update)": dict(marker=".", linestyle="none", color="tab:blue", markersize=4),
        "incremental (refit)": dict(marker="o", linestyle="none", color="tab:orange", markersize=4),
        "full refit every round": dict(marker="s", linestyle="-", color="tab:red", markersize=3),
    }
    for name, style in styles.items():
        part = table[table["service"] == name]
        ax.plot(part["days"], part["seconds"] * 1000, label=name, **style)
    ax.set_xlabel("stored history (days of 5-minute windows)")
    ax.set_ylabel("round time (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Forecast service round, {args.series} series, model {args.model}, refit every {args.refit_every} rounds")
    ax.legend()
    ax.grid(alpha=0.3)
    figure = FIGURES / f"forecast_service_rounds_{args.model}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    print(f"\nwrote {figure}")


if __name__ == "__main__":
    main()
