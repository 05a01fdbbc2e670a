"""Trend prediction by the serving edge model with a trend LoRA adapter (issue 13), next to the
separate digit-vocabulary model and the cheap baselines, all measured in the same run.

Protocol: the Milan file, hourly. Both LLM adapters are trained once, on days 1-``--train-days``
of the first ``--train-cells`` cells (never again: the forecast service only loads them), then
every model forecasts the next day from each of the ``--test-days`` daily origins that follow, on
the first ``--cells`` cells; MASE against the in-sample daily seasonal naive, averaged over cells
and origins. Then automatic selection (``auto``'s candidates, with and without the edge trend
adapter) at the same origins: its MASE, its cost, and how many (cell, origin) choices went to the LLM.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/trend_lora.py --edge-model DIR --workdir /tmp/trend [--cells 5]

``--edge-model``: the serving edge model (default: ``llm.edge_model`` of the settings; ``nmt llm
build --size default`` makes one). Pieces already in ``--workdir`` (the digit base, each adapter)
are reused, so a second run measures forecasting only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from forecasting.backtest import backtest, rolling_origins
from forecasting.data import load_series_frame
from forecasting.llm import ADAPTER, LlmForecaster, build_digit_base, sample_failures, train_trend_adapter
from forecasting.registry import make_model
from nm_toolkit.config import load_settings
from nm_toolkit.llm.deployment import LlmPaths
from nm_toolkit.llm.lora import AdapterRegistry

DATA = Path("/work/shared/data/milan_cdr_hourly.csv")
BASELINES = ("snaive_daily", "snaive_weekly", "seasonal_mean", "ensemble")


def trained(adapters: Path, base: Path, frame: pd.DataFrame, params: dict[str, object]) -> tuple[float, int, float]:
    """Train the trend adapter on ``base`` unless ``adapters`` holds one; (seconds, windows, last loss)."""
    if (adapters / ADAPTER / "adapter_config.json").is_file():
        card = AdapterRegistry(adapters).card(ADAPTER)
        loss = json.loads((adapters / ADAPTER / "nmt_card.json").read_text())["loss_curve"][-1]
        print(f"  reusing {adapters / ADAPTER} ({card.train_examples} windows, {card.train_seconds:.0f} s when trained)", flush=True)
        return card.train_seconds, card.train_examples, loss
    card, forecaster = train_trend_adapter(frame, base, adapters, **params)
    print(f"  trained {adapters / ADAPTER}: {card.train_examples} windows, {len(forecaster.losses_)} steps, "
          f"loss {forecaster.losses_[0]:.3f} -> {forecaster.losses_[-1]:.3f}, {card.train_seconds:.0f} s", flush=True)
    return card.train_seconds, card.train_examples, forecaster.losses_[-1]


def malformed(notes: pd.Series) -> tuple[int, int]:
    """Malformed samples dropped and forecasts on the seasonal-naive fallback, from the notes."""
    return sample_failures(notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--edge-model", type=Path, help="the serving edge model (default: llm.edge_model)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nmt-bench-trend"))
    parser.add_argument("--cells", type=int, default=5, help="cells forecast and scored")
    parser.add_argument("--train-cells", type=int, default=20, help="cells whose training days tune the adapters")
    parser.add_argument("--train-days", type=int, default=55)
    parser.add_argument("--test-days", type=int, default=7, help="daily origins after the training days")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-windows", type=int, default=2400)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="the digit model's LoRA learning rate")
    # the edge adapter's own settings default to forecasting.llm.EDGE_TREND, as `nmt forecast train-trend` trains it
    parser.add_argument("--edge-context", type=int, help="at most this many values, cut to what the edge model's positions hold")
    parser.add_argument("--edge-chunk", type=int)
    parser.add_argument("--edge-precision", type=int, help="decimals of value / scale in the edge's digit text")
    parser.add_argument("--edge-lr", type=float)
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of both LLMs")
    parser.add_argument("--digit-base-steps", type=int, default=300)
    parser.add_argument("--no-digits", action="store_true", help="leave the digit-vocabulary model out")
    parser.add_argument("--no-auto", action="store_true", help="leave automatic selection out")
    parser.add_argument("--train-only", action="store_true", help="train what the work directory lacks, then stop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    edge = args.edge_model or LlmPaths.from_settings(load_settings()).edge_model
    if not (edge / "config.json").is_file():
        print(f"no edge model at {edge}: build one with `nmt llm build --size default` or pass --edge-model", file=sys.stderr)
        return 2
    frame, step = load_series_frame(args.data)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    train_steps = args.train_days * 24
    training = frame.iloc[:train_steps, : args.train_cells]
    scored = frame.iloc[: train_steps + args.test_days * 24, : args.cells]
    origins = rolling_origins(len(scored), train_steps, 24, 24)
    common = {"samples": args.samples, "epochs": args.epochs, "max_windows": args.max_windows, "rank": args.rank, "learning_rate": args.lr,
              "temperature": args.temperature}
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    print(f"\ntraining the trend adapters once, on days 1-{args.train_days} of {training.shape[1]} cells", flush=True)
    costs: dict[str, tuple[float, int, float]] = {}
    models = {name: make_model(name, step) for name in BASELINES}
    edge_params = {"context_points": args.edge_context, "chunk_points": args.edge_chunk, "precision": args.edge_precision, "learning_rate": args.edge_lr}
    common_edge = {k: v for k, v in common.items() if k != "learning_rate"}
    costs["llm_edge"] = trained(work / "edge-adapters", edge, training, {**common_edge, **{k: v for k, v in edge_params.items() if v is not None}})
    # the registry's `llm` and `auto_llm` read the edge model and its adapters from the settings
    os.environ.update({"NMT_LLM__EDGE_MODEL": str(edge), "NMT_LLM__ADAPTERS_DIR": str(work / "edge-adapters")})
    models["llm_edge"] = make_model("llm", step).set_params(temperature=args.temperature)
    base_seconds = 0.0
    if not args.no_digits:
        digit_base = work / "digit-base"
        if not (digit_base / "config.json").is_file():
            started = time.perf_counter()
            model, tokenizer, losses = build_digit_base("edge", args.digit_base_steps, 168 + 24)
            model.save_pretrained(digit_base)
            tokenizer.save_pretrained(digit_base)
            base_seconds = time.perf_counter() - started
            (digit_base / "bench_build.json").write_text(json.dumps({"steps": args.digit_base_steps, "seconds": base_seconds, "loss": losses[-1]}))
        built = json.loads((digit_base / "bench_build.json").read_text())
        base_seconds = built["seconds"]
        print(f"  digit base: {built['steps']} steps, final loss {built['loss']:.3f}, {base_seconds:.0f} s", flush=True)
        costs["llm_digits"] = trained(work / "digit-adapters", digit_base, training, {**common, "context_points": 168, "chunk_points": 24, "precision": 2, "train_embeddings": False})  # as issue 5 measured it
        models["llm_digits"] = LlmForecaster.from_adapter(work / "digit-adapters", temperature=args.temperature)
    if args.train_only:
        return 0

    print(f"\nforecasting day-ahead from {len(origins)} daily origins on {scored.shape[1]} cells", flush=True)
    result = backtest(scored, models, origins, 24, season=24, level=0.9, on_step=lambda m, _: print(f"  done {m}", flush=True))
    table = result.summary()
    print("\n## Day-ahead, trained once (the adapters never see the scored days)")
    print(table.round(3).to_string())
    for name in ("llm_edge", "llm_digits"):
        if name in models:
            dropped, fallbacks = malformed(result.scores.loc[result.scores["model"] == name, "note"])
            seconds, windows, loss = costs[name]
            print(f"{name}: trained once on {windows} windows in {seconds:.0f} s (final loss {loss:.3f}); "
                  f"malformed samples dropped {dropped} of {args.samples * len(result.scores) // len(models)}, forecasts on fallback {fallbacks}")
    if "llm_digits" in models:
        print(f"llm_digits base pre-training (once): {base_seconds:.0f} s")
    reference = table.loc["ensemble", "mase"]
    for name in [m for m in ("llm_edge", "llm_digits") if m in models]:
        print(f"{name} MASE {table.loc[name, 'mase']:.3f} vs ensemble {reference:.3f} ({table.loc[name, 'mase'] / reference - 1:+.1%}), "
              f"{table.loc[name, 'seconds_per_series'] / max(table.loc['ensemble', 'seconds_per_series'], 1e-9):.0f}x its seconds per series")

    if not args.no_auto:
        selectors = {"auto": make_model("auto", step), "auto_llm": make_model("auto_llm", step)}
        selectors["auto_llm"].candidates[-1].set_params(temperature=args.temperature)  # type: ignore[attr-defined]
        chosen = backtest(scored, selectors, origins, 24, season=24, level=0.9, on_step=lambda m, _: print(f"  done {m}", flush=True))
        print("\n## Automatic selection per series (2 validation folds of a day before each origin)")
        print(chosen.summary().round(3).to_string())
        notes = chosen.scores.loc[chosen.scores["model"] == "auto_llm", "note"].astype(str)
        to_llm = int(notes.str.contains("auto-selected llm").sum())
        series = chosen.scores.loc[(chosen.scores["model"] == "auto_llm") & notes.str.contains("auto-selected llm"), "series"]
        print(f"auto_llm gave the LLM {to_llm} of {len(notes)} (cell, origin) choices, in {series.nunique()} of {scored.shape[1]} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
