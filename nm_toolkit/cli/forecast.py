"""``nmt forecast``: backtest models on a file, make and store forecasts, query and plot them."""

from __future__ import annotations

import math
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from forecasting.registry import DEFAULT_MODEL, MODEL_NAMES, make_model  # cheap: models are imported when built
from nm_toolkit.cli.common import ConfigOption, MetricsPortOption, run_service, settings_from, shared_bus_settings, stop_on_signals
from nm_toolkit.cli.output import JsonOption, emit, err_console
from nm_toolkit.errors import UserError

# pandas, the models, the store and the bus are imported by the commands that use them, so that
# `nmt --help` and the other commands do not pay for them at start.
if TYPE_CHECKING:
    import pandas as pd

    from forecasting.base import Forecaster
    from forecasting.store import ForecastStore
    from nm_toolkit.config import Settings
    from nm_toolkit.schemas import Forecast

app = typer.Typer(help="Forecasting: backtests, forecasts, and the forecast store.", no_args_is_help=True)

DEFAULT_BACKTEST_MODELS = "snaive_daily,snaive_weekly,seasonal_mean,gbm,ensemble"
InputOption = typer.Option(..., "--input", "-i", help="wide CSV (timestamp + one column per series) or long CSV (timestamp, series, value)")
SeriesOption = typer.Option(..., "--series", "-s", help="series id (a column name, or SOURCE|METRIC from the service)")
HolidaysOption = typer.Option(
    None, help="public holidays of the data's place (IT, IT-MI, US-CA): day_type and ensemble forecast them as Sundays "
    "(default: settings forecast.holidays)")
BreaksOption = typer.Option(
    None, help="comma-separated yearly breaks, MM-DD..MM-DD (12-23..01-06): day_type forecasts their working days "
    "halfway between a working day and a Saturday (default: settings forecast.breaks)")
AtOption = typer.Option(None, "--at", help="a time (ISO 8601, UTC if no zone): the newest forecast issued at or before it")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{option} {value!r} is not a time: use ISO 8601, e.g. 2013-12-26T00:00") from exc
    return (stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)).to_pydatetime()


def _split_names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _with_calendar(settings: Settings, holidays: str | None, breaks: str | None) -> Settings:
    """``settings`` with ``--holidays`` and ``--breaks``, where given, as the calendar (checked now,
    so a wrong code or break is one line before any work)."""
    from forecasting.calendar import parse_break, public_holidays

    update: dict[str, object] = {}
    if holidays is not None:
        public_holidays(holidays, (2000,))
        update["holidays"] = holidays
    if breaks is not None:
        names = _split_names(breaks)
        for text in names:
            parse_break(text)
        update["breaks"] = names
    return settings.model_copy(update={"forecast": settings.forecast.model_copy(update=update)}) if update else settings


def _models(names: list[str], step: pd.Timedelta, settings: Settings) -> dict[str, Forecaster]:
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise UserError(f"unknown model {', '.join(unknown)}: choose from {', '.join(MODEL_NAMES)}")
    return {n: make_model(n, step, settings) for n in names}


def _store(settings: Settings) -> ForecastStore:
    from forecasting.store import ForecastStore, default_store_path

    return ForecastStore(settings.forecast_service.store_path or default_store_path(settings.state_dir))


def _positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{option} must be positive, got {value}")


@app.command()
def backtest(
    input: Path = InputOption,
    train_days: float | None = typer.Option(None, help="train on the first N days (default: all but the last horizon)"),
    horizon: int | None = typer.Option(None, help="steps to forecast from each origin (default: one day)"),
    rolling: bool = typer.Option(False, "--rolling", help="move the origin forward every --step steps to the end of the file"),
    step: int | None = typer.Option(None, help="steps between rolling origins (default: the horizon)"),
    models: str = typer.Option(DEFAULT_BACKTEST_MODELS, help=f"comma-separated, from: {', '.join(MODEL_NAMES)}"),
    series: str | None = typer.Option(None, help="comma-separated series (columns) to use (default: all)"),
    level: float = typer.Option(0.9, min=0.01, max=0.99, help="nominal level of the prediction intervals"),
    refit_every: int | None = typer.Option(
        None, help="origins between full refits; in between, models advance by update() with the new rows "
        "(default with --rolling: a day of origins; 1 refits at every origin)"),
    global_refit_every: int | None = typer.Option(
        None, help="the same for models fitted across all series at once, gbm and ensemble (default: a week of origins)"),
    holidays: str | None = HolidaysOption,
    breaks: str | None = BreaksOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Score models by backtest against the last value: MAE (and its ratio to the last value's), RMSE,
    MASE (daily seasonal scale), sMAPE, interval coverage, seconds per series and origin."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from forecasting.backtest import backtest as run_backtest
    from forecasting.backtest import default_refits, fixed_origin, refit_schedule, rolling_origins, with_baseline
    from forecasting.base import steps_per
    from forecasting.data import load_series_frame
    from forecasting.history import DAY

    for value, option in ((train_days, "--train-days"), (horizon, "--horizon"), (step, "--step"),
                          (refit_every, "--refit-every"), (global_refit_every, "--global-refit-every")):  # fmt: skip
        _positive(value, option)
    frame, sampling = load_series_frame(input, _split_names(series))
    day = steps_per(DAY, sampling)
    h = horizon or day
    train = round(train_days * day) if train_days is not None else len(frame) - h
    try:
        origins = rolling_origins(len(frame), train, h, step or h) if rolling else fixed_origin(len(frame), train, h)
    except ValueError as exc:
        raise UserError(f"{input}: {exc}") from exc
    chosen = with_baseline(_models(_split_names(models), sampling, _with_calendar(settings_from(config), holidays, breaks)))
    daily, weekly = default_refits(step or h, day)
    every, global_every = refit_every or daily, global_refit_every or weekly
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task("backtesting", total=len(origins) * len(chosen))
        result = run_backtest(
            frame, chosen, origins, h, season=day, level=level, refit_every=refit_schedule(chosen, every, global_every),
            on_step=lambda model, origin: progress.update(task, advance=1, description=f"{model} @ {frame.index[origin]:%Y-%m-%d %H:%M}"),
        )
    summary = result.summary()
    rows = [{"model": m, **{k: _num(v) for k, v in r.items()}} for m, r in summary.iterrows()]
    data = {
        "input": str(input), "step_seconds": int(sampling.total_seconds()), "series": frame.shape[1],
        "origins": len(origins), "first_origin": frame.index[origins[0]].isoformat(), "horizon": h,
        "mase_season_steps": day, "level": level, "refit_every": every, "global_refit_every": global_every,
        "seconds": round(sum(result.seconds.values()), 3), "models": rows,
    }
    refits = f", refit every {every} origins (global models {global_every}), update() between" if len(origins) > 1 else ""
    title = (f"backtest: {frame.shape[1]} series, {len(origins)} origin(s) from {frame.index[origins[0]]:%Y-%m-%d %H:%M}, "
             f"horizon {h} steps of {int(sampling.total_seconds())} s{refits}")
    emit(as_json, data, title, rows)


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


@app.command()
def predict(
    input: Path = InputOption,
    model: str = typer.Option(DEFAULT_MODEL, help=f"one of: {', '.join(MODEL_NAMES)}"),
    horizon: int | None = typer.Option(None, help="steps to forecast (default: settings forecast.horizon)"),
    at: str | None = typer.Option(None, "--at", help="forecast as of this time: only data before it is used (default: after the last row)"),
    series: str | None = typer.Option(None, help="comma-separated series (columns) to forecast (default: all)"),
    holidays: str | None = HolidaysOption,
    breaks: str | None = BreaksOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Forecast every series of a file and keep the forecasts (and the file's history) in the store."""
    from forecasting.data import load_series_frame
    from nm_toolkit.schemas import Forecast

    settings = _with_calendar(settings_from(config), holidays, breaks)
    _positive(horizon, "--horizon")
    frame, sampling = load_series_frame(input, _split_names(series))
    cutoff = _parse_time(at, "--at")
    history = frame[frame.index < cutoff] if cutoff else frame
    if len(history) < 2:
        raise UserError(f"--at {at} leaves {len(history)} rows of {input} before it: pick a later time")
    forecaster = _models([model], sampling, settings)[model]
    h = horizon or settings.forecast.horizon
    with err_console.status(f"forecasting {frame.shape[1]} series with {model}...") if not as_json else nullcontext():
        results = forecaster.forecast_many(history, h, settings.forecast.level)
    issued = cutoff or (history.index[-1] + sampling).to_pydatetime()
    step_seconds = int(sampling.total_seconds())
    forecasts = [
        Forecast(
            series_id=sid, model=fc.model, issued_at=issued, step_seconds=step_seconds, start=fc.index[0].to_pydatetime(),
            mean=fc.mean.round(4).tolist(), lower=fc.lower.round(4).tolist(), upper=fc.upper.round(4).tolist(),
            level=fc.level, note=fc.note,
        )
        for sid, fc in results.items()
    ]
    with _store(settings) as store:
        store.put_points((str(c), t.to_pydatetime(), step_seconds, float(v)) for c in frame.columns for t, v in frame[c].dropna().items())
        store.put_forecasts(forecasts)
        path = store.path
    rows = [
        {"series_id": f.series_id, "model": f.model, "start": f.start.isoformat(), "horizon": f.horizon,
         "peak": max(f.mean), "note": f.note}
        for f in forecasts
    ]
    emit(as_json, {"store": str(path), "issued_at": issued.isoformat(), "forecasts": rows}, f"forecasts stored in {path}", rows)


def _latest(store: ForecastStore, series_id: str, at: datetime | None) -> Forecast:
    forecast = store.latest(series_id, at)
    if forecast is None:
        known = [r["series_id"] for r in store.summary()][:8]
        hint = f"pick a known series: {', '.join(map(str, known))}" if known else "the store is empty: run `nmt forecast predict` or `nmt forecast serve` first"
        when = f" issued at or before {at:%Y-%m-%d %H:%M}" if at else ""
        raise UserError(f"no forecast for series {series_id!r}{when} in {store.path} ({hint})")
    return forecast


@app.command()
def show(
    series: str = SeriesOption,
    at: str | None = AtOption,
    horizon: int | None = typer.Option(None, help="show only the first H steps"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the newest stored forecast of a series, step by step, with actuals where known."""
    import pandas as pd

    from forecasting.plot import forecast_index

    _positive(horizon, "--horizon")
    with _store(settings_from(config)) as store:
        forecast = _latest(store, series, _parse_time(at, "--at"))
        actual = store.history(series).reindex(forecast_index(forecast))
    h = min(horizon or forecast.horizon, forecast.horizon)
    index = forecast_index(forecast)
    rows = [
        {"time": index[i].isoformat(), "mean": forecast.mean[i], "lower": forecast.lower[i], "upper": forecast.upper[i],
         "actual": None if pd.isna(actual.iloc[i]) else float(actual.iloc[i])}
        for i in range(h)
    ]
    data = {**forecast.model_dump(mode="json", exclude={"mean", "lower", "upper"}), "steps": rows}
    emit(as_json, data, f"{series}: {forecast.model}, issued {forecast.issued_at:%Y-%m-%d %H:%M} UTC {forecast.note}", rows)


@app.command()
def plot(
    series: str = SeriesOption,
    output: Path = typer.Option(..., "--output", "-o", help="PNG file to write"),
    at: str | None = AtOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Plot history, forecast, interval band and actuals (where known) of a series to a PNG."""
    from forecasting.plot import plot_forecast

    if output.suffix.lower() != ".png":
        raise UserError(f"{output} is not a .png path: pass e.g. -o {output.with_suffix('.png').name}")
    with _store(settings_from(config)) as store:
        forecast = _latest(store, series, _parse_time(at, "--at"))
        history = store.history(series)
    path = plot_forecast(forecast, history, output)
    emit(as_json, {"series_id": series, "png": str(path)}, "plot", [{"series_id": series, "png": str(path)}])


@app.command("list")
def list_(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """List the series in the forecast store with their newest forecast."""
    with _store(settings_from(config)) as store:
        rows = store.summary()
        path = store.path
    emit(as_json, {"store": str(path), "series": rows}, f"forecast store {path}", rows)


@app.command("train-trend")
def train_trend(
    input: Path = InputOption,
    series: str | None = typer.Option(None, help="comma-separated series (columns) to train on (default: all)"),
    context_points: int | None = typer.Option(None, help="values the model reads, at most (default 72; cut to what its positions hold)"),
    chunk_points: int | None = typer.Option(None, help="values it writes per generation (default 24); longer horizons go chunk by chunk"),
    max_windows: int = typer.Option(2400, help="at most this many (context, next chunk) training windows"),
    epochs: float = typer.Option(1.0, help="passes over the windows"),
    learning_rate: float | None = typer.Option(None, "--lr", help="LoRA learning rate (default by the base's size: 1e-2 small, 3e-4 pretrained)"),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the edge model's trend adapter once, on a file's series; forecasts then only load it.

    The adapter is saved as `trend` with the edge's other adapters (llm.adapters_dir), on the
    serving edge model (llm.edge_model); the forecast models `llm` and `auto_llm` use it."""
    from forecasting.data import load_series_frame
    from forecasting.llm import train_trend_adapter
    from nm_toolkit.llm.deployment import LlmPaths

    sizes = {"context_points": context_points, "chunk_points": chunk_points, "max_windows": max_windows, "epochs": epochs}
    for name, value in sizes.items():
        _positive(value, "--" + name.replace("_", "-"))
    _positive(learning_rate, "--lr")
    paths = LlmPaths.from_settings(settings_from(config))
    if not (paths.edge_model / "config.json").is_file():
        raise UserError(f"no edge model at {paths.edge_model}: build one with `nmt llm build` or set llm.edge_model")
    frame, _ = load_series_frame(input, _split_names(series))
    with err_console.status(f"training the trend adapter on {frame.shape[1]} series...") if not as_json else nullcontext():
        card, fitted = train_trend_adapter(
            frame, paths.edge_model, paths.adapters_dir, **{k: v for k, v in {**sizes, "learning_rate": learning_rate}.items() if v is not None}
        )
    data = {
        "adapter": str(paths.adapters_dir / card.name), "task": card.task, "base": card.base, "series": frame.shape[1],
        "windows": card.train_examples, "steps": len(fitted.losses_), "learning_rate": fitted.learning_rate, "final_loss": round(fitted.losses_[-1], 4),
        "train_seconds": card.train_seconds,
    }
    emit(as_json, data, "trend adapter")


@app.command()
def serve(
    config: Path | None = ConfigOption,
    idle_exit: float | None = typer.Option(None, help="forecast once more and exit after this many seconds without series windows"),
    metrics_port: int | None = MetricsPortOption,
    as_json: bool = JsonOption,
) -> None:
    """Run the forecasting service: series windows in, forecasts out every forecast_service.interval_seconds."""
    from forecasting.service import forecast_service
    from nm_toolkit.bus import bus_from_settings
    from nm_toolkit.bus.runtime import StreamRunner

    settings = shared_bus_settings(config, "nmt forecast serve")
    stop = stop_on_signals()
    bus = bus_from_settings(settings)
    stats = run_service(StreamRunner(bus, forecast_service(settings, bus)), settings, stop, idle_exit_s=idle_exit, metrics_port=metrics_port)
    emit(as_json, stats, "forecast service", [{"counter": k, "value": v} for k, v in stats.items()])
