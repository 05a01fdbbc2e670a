"""Trend forecasts from the edge language model: LLMTime's digit text, one LoRA adapter across many series.

NetGPT's claim is that an edge LLM predicts trends as a by-product. Here the edge model reads the
last ``context_points`` values of a series as digit text (:mod:`forecasting.digits`) and writes the
next ``chunk_points``; a horizon longer than a chunk is reached chunk by chunk, each sample path
continuing from its own earlier chunks. One adapter is tuned across windows of every series given
(a global model, like :class:`~forecasting.gbm.GlobalGBM`); the forecast is the median of
``samples`` sampled paths and the interval their quantiles. Samples that do not parse are dropped;
a series left with none falls back to the daily seasonal naive and says so.

The base is a checkpoint directory whose tokenizer spells each fixed-width value as one token, or,
by default, an edge-sized GPT-2 built here with that tokenizer and pre-trained on synthetic
seasonal traffic (:func:`build_digit_base`): no text model can be downloaded, and a text model's
byte-pair tokenizer splits digits inconsistently.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from sklearn.base import clone
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from collectors.synthetic import SyntheticTelemetry
from forecasting.base import Forecaster, PointForecast, future_index, steps_per
from forecasting.digits import DigitCodec
from forecasting.history import DAY, clean_history, infer_step, regular_grid
from forecasting.naive import SeasonalNaive
from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.init import seed_everything
from nm_toolkit.llm.lora import LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.presets import PRESETS, transformers_config
from nm_toolkit.llm.training import encode_pair, train

ADAPTER = "forecast"
PARAMS_FILE = "llm_forecaster.json"
GENERATION_ROWS = 256  # sample paths per generate call: bounds the KV cache when many series are forecast


def synthetic_windows(count: int, points: int, seed: int) -> Iterator[np.ndarray]:
    """``count`` windows of ``points`` hourly values from synthetic networks of varied shape.

    Each network draws its own daily and weekly amplitude, trend, noise and burst rate, so the
    base sees many shapes and levels rather than one, and learns to continue a cycle from its
    context instead of memorising one profile.
    """
    rng = np.random.default_rng(seed)
    per_network = 16
    while count > 0:
        network = SyntheticTelemetry(
            n_sources=per_network, periods=points + 24 * 7, daily_amplitude=rng.uniform(0.1, 0.9),
            weekly_amplitude=rng.uniform(0.0, 0.4), trend_per_day=rng.normal(0, 0.01), noise=rng.uniform(0.02, 0.3),
            burst_probability=rng.uniform(0, 0.02), missing_probability=0.0, seed=int(rng.integers(2**31)),
        ).frame().to_numpy()
        for column in network.T[: min(per_network, count)]:
            start = int(rng.integers(0, len(column) - points + 1))
            yield column[start : start + points]
        count -= per_network


def build_digit_base(
    preset: str = "edge", steps: int = 300, window_points: int = 96, codec: DigitCodec | None = None,
    batch_size: int = 16, learning_rate: float = 3e-3, seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[float]]:
    """A GPT-2 of ``preset``'s shape with the digit tokenizer, pre-trained on synthetic traffic windows.

    The position table is widened when ``window_points`` values would not fit the preset's
    context. Returns the model, tokenizer and loss per step; ``save_pretrained`` both to reuse the
    base (``LlmForecaster(base_model=DIR)``).
    """
    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}: choose from {', '.join(PRESETS)}")
    codec = codec or DigitCodec()
    tokenizer = codec.tokenizer()
    shape = PRESETS[preset]
    shape = replace(shape, context=max(shape.context, window_points + 1))  # + end of text
    seed_everything(seed)
    model = AutoModelForCausalLM.from_config(
        transformers_config("gpt2", shape, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    )
    texts = [codec.encode(w, codec.scale(w)) for w in synthetic_windows(steps * batch_size, window_points, seed)]
    examples = [encode_pair(tokenizer, "", text, shape.context) for text in texts]
    losses = train(model, examples, tokenizer.pad_token_id, steps, batch_size, learning_rate, seed)
    return model, tokenizer, losses


@functools.lru_cache(maxsize=2)
def _shared_digit_base(
    preset: str, steps: int, window_points: int, codec: DigitCodec, batch_size: int, learning_rate: float, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, tuple[float, ...]]:
    """One pre-training per configuration and process: a backtest's origins and automatic selection's
    folds fit the forecaster again and again, and the base does not depend on their data."""
    model, tokenizer, losses = build_digit_base(preset, steps, window_points, codec, batch_size, learning_rate, seed)
    return model, tokenizer, tuple(losses)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave as is) and restore the previous count."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LlmForecaster(Forecaster):
    """LLMTime-style forecasts from a LoRA-tuned edge model; see the module docstring.

    ``base_model``: checkpoint directory (None: :func:`build_digit_base` with ``preset`` and
    ``base_steps``). ``adapter``: a directory :meth:`save_pretrained` wrote; when given, ``fit``
    reuses that adapter instead of tuning one. Tuning uses at most ``max_windows`` (context, next
    chunk) windows, their origins ``window_stride`` steps apart, for ``epochs`` passes.
    """

    name = "llm"

    def __init__(
        self,
        base_model: str | Path | None = None,
        adapter: str | Path | None = None,
        preset: str = "edge",
        base_steps: int = 300,
        context_points: int = 168,
        chunk_points: int = 24,
        precision: int = 2,
        alpha: float = 0.95,
        samples: int = 20,
        temperature: float = 1.0,
        rank: int = 16,
        epochs: float = 1.0,
        max_windows: int = 2400,
        window_stride: int = 6,
        batch_size: int = 16,
        learning_rate: float = 3e-3,
        seed: int = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.base_model = base_model
        self.adapter = adapter
        self.preset = preset
        self.base_steps = base_steps
        self.context_points = context_points
        self.chunk_points = chunk_points
        self.precision = precision
        self.alpha = alpha
        self.samples = samples
        self.temperature = temperature
        self.rank = rank
        self.epochs = epochs
        self.max_windows = max_windows
        self.window_stride = window_stride
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.n_threads = n_threads

    # -- the estimator interface --------------------------------------------------------------
    def fit(self, y: pd.Series) -> Self:
        return self._fit_frame(y.to_frame(name=y.name if y.name is not None else "y"))

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return next(iter(self._predict_frame(horizon, level).values()))

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        return clone(self)._fit_frame(frame)._predict_frame(horizon, level)

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the adapter, the base when it was built here, and the parameters to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.lm_.model.save_pretrained(directory / "adapter", selected_adapters=[ADAPTER])
        nested = directory / "adapter" / ADAPTER  # peft nests a non-default adapter name
        adapter_dir = nested if nested.is_dir() else directory / "adapter"
        params = {k: v for k, v in self.get_params().items() if k not in ("base_model", "adapter")}
        if self.base_model is None:
            base = copy.deepcopy(self.lm_.model).unload()
            base.save_pretrained(directory / "base", safe_serialization=True)
            self.lm_.tokenizer.save_pretrained(directory / "base")
            params["base_model"] = "base"
        else:
            params["base_model"] = str(Path(self.base_model).resolve())
        params["adapter"] = str(adapter_dir.relative_to(directory))
        (directory / PARAMS_FILE).write_text(json.dumps(params, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LlmForecaster:
        """The forecaster :meth:`save_pretrained` wrote; its ``fit`` reuses the saved adapter."""
        directory = Path(directory)
        path = directory / PARAMS_FILE
        if not path.is_file():
            raise UserError(f"{directory} holds no saved LLM forecaster ({PARAMS_FILE} missing): save one with save_pretrained")
        params = json.loads(path.read_text())
        params["base_model"] = str(directory / params["base_model"]) if params["base_model"] == "base" else params["base_model"]
        params["adapter"] = str(directory / params["adapter"])
        return cls(**params)

    # -- fitting -------------------------------------------------------------------------------
    def _codec(self) -> DigitCodec:
        return DigitCodec(precision=self.precision, alpha=self.alpha)

    def load_base(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """A fresh copy of the base model and its tokenizer, building (once per process) or loading it."""
        window = self.context_points + self.chunk_points
        if self.base_model is None:
            model, tokenizer, self.base_losses_ = _shared_digit_base(
                self.preset, self.base_steps, window, self._codec(), self.batch_size, self.learning_rate, self.seed
            )
            return copy.deepcopy(model), tokenizer  # LoRA layers are injected in place: keep the shared base clean
        model, tokenizer = load_causal_lm(Path(self.base_model))
        if not self._codec().fits(tokenizer):
            raise UserError(
                f"the tokenizer of {self.base_model} does not spell each {self.precision + 1}-digit value as one token: "
                "build a base with forecasting.llm.build_digit_base (same precision) or leave base_model unset"
            )
        positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 0)
        if positions <= window:
            raise UserError(
                f"{self.base_model} reads at most {positions} tokens, too few for {window} values of digit text: "
                "lower context_points or build a base with a longer context"
            )
        return model, tokenizer

    def _fit_frame(self, frame: pd.DataFrame) -> Self:
        frame = regular_grid(frame.astype(float)).rename(columns=str)
        self.step_ = infer_step(pd.DatetimeIndex(frame.index))
        self.frame_ = frame
        self.histories_: dict[str, np.ndarray] = {}
        self.notes_: dict[str, str] = {}
        self.fallback_: dict[str, str] = {}
        for key in frame.columns:
            if frame[key].notna().sum() < self.context_points:
                self.fallback_[key] = f"fewer than {self.context_points} observed points: seasonal-naive fallback"
                continue
            clean, self.notes_[key] = clean_history(frame[key])
            self.histories_[key] = clean.to_numpy()
        window = self.context_points + self.chunk_points
        if self.adapter is None and all(len(h) < window for h in self.histories_.values()):
            note = f"no series has the {window} points of one tuning window: seasonal-naive fallback"
            self.fallback_.update(dict.fromkeys(self.histories_, note))
            self.histories_ = {}
            return self
        with _torch_threads(self.n_threads), torch.random.fork_rng(devices=[]):
            base, tokenizer = self.load_base()
            torch.manual_seed(self.seed)
            if self.adapter is not None:
                model = PeftModel.from_pretrained(base, Path(self.adapter), adapter_name=ADAPTER, is_trainable=False)
                self.losses_: list[float] = []
            else:
                model = self._tune(base, tokenizer)
        model.eval()
        self.lm_ = AdapterLM(model, tokenizer)
        return self

    def _training_pairs(self) -> list[tuple[str, str]]:
        """(context, next chunk) digit-text pairs from every series, at most ``max_windows``, seeded."""
        codec, c, k = self._codec(), self.context_points, self.chunk_points
        origins = [(key, o) for key, h in self.histories_.items() for o in range(c, len(h) - k + 1, self.window_stride)]
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(len(origins), size=min(self.max_windows, len(origins)), replace=False)
        pairs = []
        for i in sorted(chosen):
            key, o = origins[i]
            context, target = self.histories_[key][o - c : o], self.histories_[key][o : o + k]
            scale = codec.scale(context)
            pairs.append((codec.encode(context, scale), codec.encode(target, scale)))
        return pairs

    def _tune(self, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PeftModel:
        pairs = self._training_pairs()
        positions = getattr(base.config, "n_positions", None) or base.config.max_position_embeddings
        config = LoraTrainConfig(
            rank=self.rank, alpha=2 * self.rank, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, max_length=positions, seed=self.seed,
        )
        tuner = LoraFineTuner(config).fit(base, tokenizer, pairs, adapter_name=ADAPTER)
        self.losses_ = tuner.losses_
        self.train_windows_ = tuner.examples_
        return tuner.model_

    # -- forecasting ---------------------------------------------------------------------------
    def _sample_paths(self, horizon: int) -> dict[str, np.ndarray]:
        """``(surviving samples, horizon)`` paths per series; a path whose text fails to parse is dropped."""
        codec, keys = self._codec(), list(self.histories_)
        if not keys:
            return {}
        scales = {key: codec.scale(self.histories_[key][-self.context_points :]) for key in keys}
        paths = {key: [np.empty(0) for _ in range(self.samples)] for key in keys}
        limits = GenerationLimits(
            max_new_tokens=self.chunk_points, min_new_tokens=self.chunk_points, timeout_s=3600.0, do_sample=True,
            temperature=self.temperature, top_k=0,
        )
        for start in range(0, horizon, self.chunk_points):
            count = min(self.chunk_points, horizon - start)
            rows = [(key, s) for key in keys for s, path in enumerate(paths[key]) if path is not None]
            if not rows:
                break
            prompts = [
                codec.encode(np.concatenate([self.histories_[key], paths[key][s]])[-self.context_points :], scales[key])
                for key, s in rows
            ]
            texts = []
            with _torch_threads(self.n_threads):
                for first in range(0, len(prompts), GENERATION_ROWS):
                    batch = prompts[first : first + GENERATION_ROWS]
                    generated = self.lm_.generate(batch, [ADAPTER] * len(batch), limits, seed=self.seed + start + first)
                    texts += [g.text for g in generated]
            for (key, s), text in zip(rows, texts, strict=True):
                values = codec.decode(text, scales[key], count)
                paths[key][s] = None if values is None else np.concatenate([paths[key][s], values])
        return {key: np.array([p for p in paths[key] if p is not None]).reshape(-1, horizon) for key in keys}

    def _predict_frame(self, horizon: int, level: float) -> dict[str, PointForecast]:
        index = future_index(self.frame_, horizon)
        day = steps_per(DAY, self.step_)
        out: dict[str, PointForecast] = {}
        fallback = dict(self.fallback_)
        self.malformed_samples_ = 0
        for key, samples in self._sample_paths(horizon).items():
            dropped = self.samples - len(samples)
            self.malformed_samples_ += dropped
            if len(samples) == 0:
                fallback[key] = f"all {self.samples} LLM samples were malformed: seasonal-naive fallback"
                continue
            lower, mean, upper = np.quantile(samples, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
            note = "; ".join(n for n in (self.notes_[key], f"{dropped} of {self.samples} samples malformed, dropped" if dropped else "") if n)
            out[key] = PointForecast(index, mean, lower, upper, level, self.name, note)
        for key, note in fallback.items():
            out[key] = SeasonalNaive(day).fit(self.frame_[key]).predict(horizon, level).with_note(note)
        self.fallbacks_ = len(fallback)
        return {c: out[c] for c in self.frame_.columns}
