"""Trend prediction by the serving edge model: its BPE tokenizer reads LLMTime's spaced digits, the
trend adapter is trained once and saved with the edge's adapters, the forecast service only loads
it, and automatic selection can give a series the LLM. Tiny models: behaviour, not accuracy
(``bench/trend_lora.py`` measures that on Milan)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from forecasting.data import load_series_frame
from forecasting.digits import DigitCodec, SpacedDigitCodec, codec_for
from forecasting.llm import ADAPTER, SMALL_BASE_LEARNING_RATE, TREND_TASK, LlmForecaster, train_trend_adapter
from forecasting.naive import SeasonalNaive
from forecasting.registry import make_model
from forecasting.select import AutoSelect
from forecasting.service import ForecastService
from forecasting.store import ForecastStore
from nm_toolkit.bus import EmbeddedBus
from nm_toolkit.bus.runtime import StreamRunner
from nm_toolkit.cli import app
from nm_toolkit.config import load_settings
from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import COMPLETION_TASK
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.schemas import SeriesPoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path(__file__).parent / "data" / "milan_4cells_21days.csv"
TINY = {"context_points": 36, "chunk_points": 6, "max_windows": 32, "samples": 4, "window_stride": 4, "seed": 3}


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    frame, _ = load_series_frame(DATA)
    return frame.iloc[: 7 * 24, :2]


@pytest.fixture(scope="module")
def trend(tiny_llms: Path, week: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AdapterCard]:
    """The tiny edge model's adapters: a completion adapter and the trend adapter, side by side."""
    adapters = tmp_path_factory.mktemp("edge-adapters")
    model, tokenizer = load_causal_lm(tiny_llms / "edge")
    tuner = LoraFineTuner(LoraTrainConfig(rank=2, alpha=4, epochs=1, batch_size=2)).fit(model, tokenizer, [("coffee near", " the station")] * 2, "completion")
    AdapterRegistry(adapters).save(tuner.model_, AdapterCard("completion", COMPLETION_TASK, str(tiny_llms / "edge")), tuner.losses_)
    card, _ = train_trend_adapter(week, tiny_llms / "edge", adapters, **TINY)
    return adapters, card


def test_the_edge_bpe_spells_spaced_digits_consistently_and_fixed_width_values_not(tiny_llms: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llms / "edge")
    spaced = SpacedDigitCodec(precision=2)
    assert spaced.fits(tokenizer) and not DigitCodec(precision=2).fits(tokenizer)
    assert isinstance(codec_for(tokenizer), SpacedDigitCodec) and not spaced.fits(DigitCodec().tokenizer())
    text = spaced.encode(np.array([0.42, 1.05, 0.07, 0.0, 12.0]), 1.0)
    assert text == " 4 2, 1 0 5, 7, 0, 9 9 9,"  # clipped to 9.99 x the scale
    pieces = [tokenizer(f, add_special_tokens=False).input_ids for f in (" 4 2,", " 1 0 5,", " 7,", " 0,", " 9 9 9,")]
    assert tokenizer(text, add_special_tokens=False).input_ids == [i for ids in pieces for i in ids]  # each value spelt alike anywhere
    assert spaced.decode(text.strip(), 2.0, 4) == pytest.approx([0.84, 2.10, 0.14, 0.0])
    assert spaced.decode("4 2, 1 0 5 6 7, 7,", 1.0, 3) == pytest.approx([0.42, 9.99, 0.07])  # clipped as encode clips
    for malformed in ("4 2, 1 0 5", "4 2, 1 o 5, 7,", "4 2, 105, 7,", "4 2,, 7,", "4  2, 1, 1,", ""):
        assert spaced.decode(malformed, 1.0, 3) is None, malformed
    costs = spaced.token_costs(tokenizer)
    assert costs[42] == len(tokenizer(" 4 2,", add_special_tokens=False).input_ids) and costs.min() >= 2


def test_trend_adapter_is_saved_with_the_edge_adapters_and_one_base_serves_both(tiny_llms: Path, trend: tuple[Path, AdapterCard]) -> None:
    adapters, card = trend
    assert card.name == ADAPTER and card.task == TREND_TASK and card.train_examples > 0
    assert card.config["forecaster"]["chunk_points"] == 6
    assert card.config["forecaster"]["learning_rate"] == SMALL_BASE_LEARNING_RATE  # the tiny base's, chosen by its size
    lm = AdapterLM.load(tiny_llms / "edge", AdapterRegistry(adapters))
    assert {c.task for c in lm.cards.values()} == {COMPLETION_TASK, TREND_TASK}
    assert lm.select(COMPLETION_TASK, None) == "completion" and lm.select(TREND_TASK, None) == ADAPTER


def test_loaded_adapter_forecasts_without_tuning_and_samples_only_digits(
    tiny_llms: Path, trend: tuple[Path, AdapterCard], week: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapters, _ = trend
    monkeypatch.setattr(LoraFineTuner, "fit", lambda *a, **k: pytest.fail("a loaded trend adapter was tuned again"))
    forecaster = LlmForecaster.from_adapter(adapters)
    assert forecaster.base_model == str((tiny_llms / "edge").resolve()) and forecaster.context_points == 36
    fitted = forecaster.fit_many(week, 8)
    first = fitted.predict_many(8, 0.8)
    assert list(first) == [str(c) for c in week.columns]
    for fc in first.values():
        assert fc.mean.shape == (8,) and np.all(np.isfinite(fc.mean)) and np.all(fc.lower <= fc.upper)
        assert fc.index[0] == week.index[-1] + pd.Timedelta(hours=1)
    llm = fitted.fitted  # type: ignore[attr-defined]
    assert llm.losses_ == [] and isinstance(llm.codec_, SpacedDigitCodec)
    prompt = llm._prompt(llm.histories_[str(week.columns[0])], 10.0)
    assert len(llm.lm_.tokenizer(prompt).input_ids) <= llm.prompt_tokens_  # cut to fit the positions next to a chunk
    limits = GenerationLimits(max_new_tokens=12, do_sample=True, top_k=0, suppress_tokens=llm.suppressed_)
    for generation in llm.lm_.generate([prompt] * 4, [ADAPTER] * 4, limits, seed=0):
        assert set(generation.text) <= set("0123456789, "), generation.text  # sampling is held to the spelling
    later = week.index[-1] + pd.Timedelta(hours=1)
    fitted.update(pd.DataFrame({c: [5.0, 6.0] for c in week.columns}, index=pd.date_range(later, periods=2, freq="h")))
    assert next(iter(fitted.predict_many(4).values())).index[0] == later + pd.Timedelta(hours=2)  # appended, not retrained


def test_registry_llm_is_the_edge_model_with_its_trained_trend_adapter(
    tiny_llms: Path, trend: tuple[Path, AdapterCard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(tiny_llms / "edge"))
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(tmp_path / "none-yet"))
    with pytest.raises(UserError, match="nmt forecast train-trend"):
        make_model("llm", pd.Timedelta(hours=1))
    # settings handed in (a --config file's) say where the adapter is, not the process's environment
    given = load_settings(llm={"edge_model": str(tiny_llms / "edge"), "adapters_dir": str(trend[0])})
    assert make_model("llm", pd.Timedelta(hours=1), given).adapter == trend[0] / ADAPTER  # type: ignore[attr-defined]
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(trend[0]))
    llm = make_model("llm", pd.Timedelta(hours=1))
    assert isinstance(llm, LlmForecaster) and llm.adapter == trend[0] / ADAPTER and llm.base_model == tiny_llms / "edge"
    auto = make_model("auto_llm", pd.Timedelta(hours=1))
    assert [type(c).name for c in auto.candidates][-1] == "llm"  # type: ignore[attr-defined]


def test_forecast_service_refits_load_the_adapter_and_never_tune(
    tiny_llms: Path, trend: tuple[Path, AdapterCard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NMT_LLM__EDGE_MODEL", str(tiny_llms / "edge"))
    monkeypatch.setenv("NMT_LLM__ADAPTERS_DIR", str(trend[0]))
    tuned = []
    monkeypatch.setattr(LoraFineTuner, "fit", lambda *a, **k: tuned.append(1))
    settings = load_settings(
        state_dir=tmp_path, forecast={"horizon": 6, "min_history": 36}, forecast_service={"model": "llm", "refit_every_rounds": 2}
    )
    bus = EmbeddedBus(default_partitions=1)
    service = ForecastService(
        settings.forecast_service, settings.forecast, series_topic=settings.topics.series, forecasts_topic=settings.topics.forecasts,
        store=ForecastStore(None),
    )  # fmt: skip
    emitter = StreamRunner(bus, service).emitter
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for hours in (range(48), range(48, 50), range(50, 52)):
        points = [SeriesPoint(source="cell-0", metric="traffic", window_start=(start + pd.Timedelta(hours=h)).to_pydatetime(), window_seconds=3600,
                              count=1, sum=10.0 + h % 24, min=1.0, max=30.0) for h in hours]  # fmt: skip
        service.store.put_points([(p.series_id, p.window_start, 3600, p.sum) for p in points])
        forecasts, _ = service.forecast_round(emitter)
        assert len(forecasts) == 1 and len(forecasts[0].mean) == 6
    assert service.counters.rounds == 3 and service.counters.refits == 2 and tuned == []  # round 2 appended, round 3 refit by loading
    assert forecasts[0].start == (start + pd.Timedelta(hours=52)).to_pydatetime()


def test_auto_select_names_its_choice_and_can_give_a_series_the_llm(trend: tuple[Path, AdapterCard], week: pd.DataFrame) -> None:
    llm = LlmForecaster.from_adapter(trend[0])
    forecasts = AutoSelect([SeasonalNaive(24), llm], folds=1).forecast_many(week, 6)
    for fc in forecasts.values():  # the note names the winner, so a bench can count the series the LLM gets
        assert ("auto-selected seasonal_naive" in fc.note) != ("auto-selected llm" in fc.note), fc.note
        assert ("auto-selected llm" in fc.note) == (fc.model == "llm" or "fallback" in fc.note)


def test_cli_trains_the_trend_adapter_once_and_predict_uses_it(tiny_llms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"NMT_LLM__EDGE_MODEL": str(tiny_llms / "edge"), "NMT_LLM__ADAPTERS_DIR": str(tmp_path / "adapters"), "NMT_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(
        app, ["forecast", "train-trend", "-i", str(DATA), "--series", "10,1001", "--context-points", "36", "--chunk-points", "6",
              "--max-windows", "16", "--lr", "5e-3", "--json"], env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == TREND_TASK and out["windows"] == 16 and Path(out["adapter"]) == tmp_path / "adapters" / ADAPTER
    assert out["learning_rate"] == 5e-3  # the user's, over the one the base's size would give
    monkeypatch.setattr(LoraFineTuner, "fit", lambda *a, **k: pytest.fail("predict tuned the adapter"))
    result = CliRunner().invoke(app, ["forecast", "predict", "-i", str(DATA), "--model", "llm", "--horizon", "6", "--series", "10", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forecasts"][0]["model"] in ("llm", "seasonal_naive")
