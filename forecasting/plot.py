"""A forecast as a picture: recent history, the forecast, its interval band and the actuals."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from nm_toolkit.schemas import Forecast


def forecast_index(forecast: Forecast) -> pd.DatetimeIndex:
    return pd.date_range(forecast.start, periods=forecast.horizon, freq=pd.Timedelta(seconds=forecast.step_seconds))


def plot_forecast(forecast: Forecast, history: pd.Series, path: Path, context_steps: int | None = None) -> Path:
    """Write a PNG: ``context_steps`` of history before the forecast (default: 3 horizons),
    the forecast mean, the interval band, and the actual values where they are already known."""
    import matplotlib  # here, not at the top: `nmt forecast show` needs forecast_index, not matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = forecast_index(forecast)
    context = context_steps or 3 * forecast.horizon
    before = history[history.index < index[0]].iloc[-context:]
    actual = history.reindex(index).dropna()
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    ax.plot(before.index, before.to_numpy(), color="0.35", lw=1.2, label="history")
    ax.fill_between(index, forecast.lower, forecast.upper, color="tab:blue", alpha=0.2, lw=0,
                    label=f"{forecast.level:.0%} interval")
    ax.plot(index, forecast.mean, color="tab:blue", lw=1.8, label=f"forecast ({forecast.model})")
    if len(actual):
        ax.plot(actual.index, actual.to_numpy(), color="tab:orange", lw=1.2, label="actual")
    ax.axvline(index[0], color="0.6", ls="--", lw=0.8)
    ax.set_title(f"{forecast.series_id}: issued {forecast.issued_at:%Y-%m-%d %H:%M} UTC, {forecast.horizon} steps")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9, ncol=4)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
