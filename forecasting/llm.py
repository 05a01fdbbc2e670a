"""Trend forecasts from the serving edge model: LLMTime's digit text and one "trend" LoRA adapter.

NetGPT's claim is that an edge LLM predicts trends as a by-product. Here the edge model (the GPT-2
the prompt service serves, ``llm.edge_model``) reads the last values of a series as digit text
(:mod:`forecasting.digits`: LLMTime's spaced digits, which its byte-level BPE tokenizer spells
consistently) and writes the next ``chunk_points``; a horizon longer than a chunk is reached chunk
by chunk, each sample path continuing from its own earlier chunks. The context is the last
``context_points`` values, cut to what the model's positions hold next to a chunk. One adapter is
tuned across windows of every series given (a global model, like
:class:`~forecasting.gbm.GlobalGBM`); the forecast is the median of ``samples`` sampled paths and
the interval their quantiles. Samples that do not parse are dropped; a series left with none falls
back to the daily seasonal naive and says so.

The adapter is trained once (:func:`train_trend_adapter`, ``nmt forecast train-trend``) and saved
with the edge's other adapters (an :class:`~nm_toolkit.llm.lora.AdapterRegistry` card of task
``trend_forecast``), so one base serves completion and trend. A forecaster given ``adapter`` never
tunes: ``fit`` loads the adapter and reads the history, ``update`` appends to it, so the forecast
service's refits cost a load, not a training run.

``base_model`` None builds a separate digit-vocabulary GPT-2 instead, pre-trained on synthetic
seasonal traffic (:func:`build_digit_base`), whose one token per value lets it read a whole week.
``bench/trend_lora.py`` measures the two side by side: on Milan the edge's adapter is the weaker
forecaster (its training loss stalls at what the previous token alone predicts: the format and the
digit frequencies, not the daily cycle), which is why it reaches a series only through
``auto_llm``, where it must win that series' validation folds.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Iterator
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
from forecasting.base import Forecaster, ManyFitted, PointForecast, future_index, steps_per
from forecasting.digits import DigitCodec, codec_for
from forecasting.history import DAY, clean_history, infer_step, regular_grid
from forecasting.naive import SeasonalNaive
from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.init import seed_everything
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.presets import PRESETS, transformers_config
from nm_toolkit.llm.training import encode_pair, train

ADAPTER = "trend"  # the adapter's name in the model and in the edge's adapter registry
TREND_TASK = "trend_forecast"
GENERATION_ROWS = 256  # sample paths per generate call: bounds the KV cache when many series are forecast
FALLBACK_NOTE = "seasonal-naive fallback"
_DROPPED = re.compile(r"(\d+) of \d+ samples malformed")
_ALL_DROPPED = re.compile(r"all (\d+) LLM samples were malformed")


def sample_failures(notes: Iterable[str]) -> tuple[int, int]:
    """(malformed samples dropped, forecasts on the seasonal-naive fallback) from the notes of
    :class:`LlmForecaster`'s forecasts: what a bench reports beside the LLM's scores."""
    dropped = fallbacks = 0
    for note in map(str, notes):
        dropped += sum(int(n) for n in _DROPPED.findall(note)) + sum(int(n) for n in _ALL_DROPPED.findall(note))
        fallbacks += FALLBACK_NOTE in note
    return dropped, fallbacks


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
    """LLMTime-style forecasts from a LoRA-tuned language model; see the module docstring.

    ``base_model``: checkpoint directory, such as the serving edge model (None: a digit-vocabulary
    base, :func:`build_digit_base` with ``preset`` and ``base_steps``). ``adapter``: a trend
    adapter's directory (:meth:`save_adapter`); when given, ``fit`` loads it and never tunes.
    Tuning uses at most ``max_windows`` (context, next chunk) windows, their origins
    ``window_stride`` steps apart, for ``epochs`` passes; ``train_embeddings`` also trains the
    embedding rows of the digit and comma tokens, which a text model's corpus holds few of.
    """

    name = "llm"
    incremental = True  # update() appends to the history; the adapter is not tuned again

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
        train_embeddings: bool = False,
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
        self.train_embeddings = train_embeddings
        self.seed = seed
        self.n_threads = n_threads

    # -- the estimator interface --------------------------------------------------------------
    def fit(self, y: pd.Series) -> Self:
        return self._fit_frame(y.to_frame(name=y.name if y.name is not None else "y"))

    def update(self, new_points: pd.Series | pd.DataFrame) -> Self:
        """Append the points that followed the fitted history; the model and adapter stay as they are."""
        new = new_points.to_frame(name=self.frame_.columns[0]) if isinstance(new_points, pd.Series) else new_points
        frame = pd.concat([self.frame_, new.rename(columns=str).astype(float)])
        if not hasattr(self, "lm_"):  # every series was too short for the model: fit it now that they may not be
            return self._fit_frame(frame)
        self._read_history(frame)
        return self

    def predict(self, horizon: int, level: float = 0.9) -> PointForecast:
        return next(iter(self._predict_frame(horizon, level).values()))

    def fit_many(self, frame: pd.DataFrame, horizon: int | None = None) -> ManyFitted:
        """One model (one load or one tuning) for every column: sampled together, not series by series."""
        return _LlmMany(clone(self)._fit_frame(frame))

    def forecast_many(self, frame: pd.DataFrame, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        return clone(self)._fit_frame(frame)._predict_frame(horizon, level)

    # -- persistence: the edge's adapter registry ----------------------------------------------
    def save_adapter(self, adapters_dir: str | Path) -> AdapterCard:
        """Save the tuned adapter as ``trend`` in the adapter registry at ``adapters_dir``, its card
        holding this forecaster's parameters; the base must be a checkpoint directory."""
        if self.base_model is None:
            raise UserError("only an adapter of a saved base can join an adapter registry: pass base_model (the edge model)")
        params = {k: v for k, v in self.get_params().items() if k not in ("base_model", "adapter", "n_threads")}
        card = AdapterCard(
            ADAPTER, TREND_TASK, str(Path(self.base_model).resolve()), train_examples=getattr(self, "train_windows_", 0),
            train_seconds=round(getattr(self, "train_seconds_", 0.0), 1), config={"forecaster": params},
        )
        AdapterRegistry(Path(adapters_dir)).save(self.lm_.model, card, self.losses_)
        return card

    @classmethod
    def from_adapter(cls, adapters_dir: str | Path, base_model: str | Path | None = None, **overrides: object) -> LlmForecaster:
        """The forecaster of the trend adapter in ``adapters_dir`` (on ``base_model``, default the base
        its card names); its ``fit`` loads the adapter and never tunes."""
        registry = AdapterRegistry(Path(adapters_dir))
        if not (registry.path(ADAPTER) / "adapter_config.json").is_file():
            raise UserError(f"no trend adapter in {adapters_dir}: train one with `nmt forecast train-trend --input FILE`")
        card = registry.card(ADAPTER)
        if card.task != TREND_TASK:
            raise UserError(f"adapter {ADAPTER!r} in {adapters_dir} is for task {card.task!r}: retrain it with `nmt forecast train-trend`")
        params = {**card.config["forecaster"], **overrides}  # type: ignore[dict-item]
        return cls(base_model=base_model or card.base, adapter=registry.path(ADAPTER), **params)

    # -- fitting -------------------------------------------------------------------------------
    def load_base(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """A fresh copy of the base model and its tokenizer, building (once per process) or loading it;
        sets the digit spelling the tokenizer reads (``codec_``) and the token budgets."""
        if self.base_model is None:
            codec = DigitCodec(precision=self.precision, alpha=self.alpha)
            model, tokenizer, self.base_losses_ = _shared_digit_base(
                self.preset, self.base_steps, self.context_points + self.chunk_points, codec, self.batch_size,
                self.learning_rate, self.seed,
            )
            model = copy.deepcopy(model)  # LoRA layers are injected in place: keep the shared base clean
        else:
            model, tokenizer = load_causal_lm(Path(self.base_model))
            try:
                codec = codec_for(tokenizer, self.precision, self.alpha)
            except ValueError as exc:
                raise UserError(f"{self.base_model}: {exc}: use a model with a byte-level BPE tokenizer or leave base_model unset") from exc
        self.codec_ = codec
        self.costs_ = codec.token_costs(tokenizer)
        # every token the spelling uses, and end of text; sampling is held to these (LLMTime's logit bias)
        spelling = codec.encode(np.arange(10**codec.width) / 10**codec.precision, 1.0)
        allowed = {*tokenizer(spelling, add_special_tokens=False).input_ids, tokenizer.eos_token_id}
        self.suppressed_ = tuple(i for i in range(model.config.vocab_size) if i not in allowed)
        self.max_new_tokens_ = self.chunk_points * int(self.costs_.max())
        positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 0)
        self.prompt_tokens_ = positions - self.max_new_tokens_ - 1  # - 1: end of text after the chunk
        if self.prompt_tokens_ < self.max_new_tokens_:
            raise UserError(
                f"{self.base_model or 'the digit base'} reads at most {positions} tokens: a {self.chunk_points}-point chunk "
                f"({self.max_new_tokens_} tokens) leaves too little context; lower chunk_points"
            )
        return model, tokenizer

    def _prompt(self, context: np.ndarray, scale: float) -> str:
        """The last values of ``context`` (at most ``context_points``) that fit the prompt's tokens, as text."""
        context = context[-self.context_points :]
        costs = self.costs_[self.codec_.units(context, scale)][::-1].cumsum()
        keep = int(np.searchsorted(costs, self.prompt_tokens_, side="right"))
        return self.codec_.encode(context[len(context) - keep :], scale)

    def _read_history(self, frame: pd.DataFrame) -> None:
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

    def _fit_frame(self, frame: pd.DataFrame) -> Self:
        self._read_history(frame)
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
        c, k = self.context_points, self.chunk_points
        origins = [(key, o) for key, h in self.histories_.items() for o in range(c, len(h) - k + 1, self.window_stride)]
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(len(origins), size=min(self.max_windows, len(origins)), replace=False)
        pairs = []
        for i in sorted(chosen):
            key, o = origins[i]
            context, target = self.histories_[key][o - c : o], self.histories_[key][o : o + k]
            scale = self.codec_.scale(context)
            pairs.append((self._prompt(context, scale), self.codec_.encode(target, scale)))
        return pairs

    def _tune(self, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PeftModel:
        pairs = self._training_pairs()
        positions = getattr(base.config, "n_positions", None) or base.config.max_position_embeddings
        config = LoraTrainConfig(
            rank=self.rank, alpha=2 * self.rank, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, max_length=positions, seed=self.seed, train_target_embeddings=self.train_embeddings,
        )
        tuner = LoraFineTuner(config).fit(base, tokenizer, pairs, adapter_name=ADAPTER)
        self.losses_ = tuner.losses_
        self.train_windows_ = tuner.examples_
        self.train_seconds_ = tuner.seconds_
        return tuner.model_

    # -- forecasting ---------------------------------------------------------------------------
    def _sample_paths(self, horizon: int) -> dict[str, np.ndarray]:
        """``(surviving samples, horizon)`` paths per series; a path whose text fails to parse is dropped."""
        if not self.histories_:
            return {}
        codec, keys = self.codec_, list(self.histories_)
        scales = {key: codec.scale(self.histories_[key][-self.context_points :]) for key in keys}
        paths = {key: [np.empty(0) for _ in range(self.samples)] for key in keys}
        limits = GenerationLimits(
            # no end of text before the chunk's worst-case length: a sample is never cut short of its values
            max_new_tokens=self.max_new_tokens_, min_new_tokens=self.max_new_tokens_, timeout_s=3600.0,
            do_sample=True, temperature=self.temperature, top_k=0, suppress_tokens=self.suppressed_,
        )
        for start in range(0, horizon, self.chunk_points):
            count = min(self.chunk_points, horizon - start)
            rows = [(key, s) for key in keys for s, path in enumerate(paths[key]) if path is not None]
            if not rows:
                break
            prompts = [self._prompt(np.concatenate([self.histories_[key], paths[key][s]]), scales[key]) for key, s in rows]
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
                fallback[key] = f"all {self.samples} LLM samples were malformed: {FALLBACK_NOTE}"
                continue
            lower, mean, upper = np.quantile(samples, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
            note = "; ".join(n for n in (self.notes_[key], f"{dropped} of {self.samples} samples malformed, dropped" if dropped else "") if n)
            out[key] = PointForecast(index, mean, lower, upper, level, self.name, note)
        for key, note in fallback.items():
            out[key] = SeasonalNaive(day).fit(self.frame_[key]).predict(horizon, level).with_note(note)
        self.fallbacks_ = len(fallback)
        return {c: out[c] for c in self.frame_.columns}


class _LlmMany(ManyFitted):
    """An :class:`LlmForecaster` fitted on many series, advanced by appending rows."""

    def __init__(self, fitted: LlmForecaster) -> None:
        self.fitted = fitted

    def update(self, new_points: pd.DataFrame) -> _LlmMany:
        self.fitted.update(new_points)
        return self

    def predict_many(self, horizon: int, level: float = 0.9) -> dict[str, PointForecast]:
        return self.fitted._predict_frame(horizon, level)


# How the edge's trend adapter is trained unless told otherwise (bench/trend_lora.py compares settings):
# the context is what a 256-position model holds next to a day-long chunk at one decimal
EDGE_TREND: dict[str, object] = {"context_points": 72, "chunk_points": 24, "precision": 1, "train_embeddings": True}
# The learning rate by the edge base's size: the toolkit's own bases (a few million parameters,
# briefly pre-trained) learn the digits at 1e-2; SmolLM2-135M's adapter diverged there (loss 0.87 ->
# 5.8, every sample malformed) and trains at 3e-4 (bench/RESULTS.md, issue 24).
SMALL_BASE_PARAMETERS = 20_000_000
SMALL_BASE_LEARNING_RATE, PRETRAINED_LEARNING_RATE = 1e-2, 3e-4


def edge_trend_learning_rate(edge_model: str | Path) -> float:
    """The trend adapter's learning rate on ``edge_model`` when none is given (by its parameter count)."""
    from nm_toolkit.llm.offline import checkpoint_parameters

    return SMALL_BASE_LEARNING_RATE if checkpoint_parameters(Path(edge_model)) < SMALL_BASE_PARAMETERS else PRETRAINED_LEARNING_RATE


def train_trend_adapter(frame: pd.DataFrame, edge_model: str | Path, adapters_dir: str | Path, **params: object) -> tuple[AdapterCard, LlmForecaster]:
    """Tune the trend adapter on ``edge_model`` over windows of every series in ``frame`` (``params``
    over :data:`EDGE_TREND`, the learning rate by the base's size) and save it with the edge's
    adapters: the one-off training that the forecast service then only loads."""
    params = {**EDGE_TREND, "learning_rate": edge_trend_learning_rate(edge_model), **params}
    forecaster = LlmForecaster(base_model=edge_model, **params)._fit_frame(frame)  # type: ignore[arg-type]
    if not hasattr(forecaster, "lm_"):
        window = forecaster.context_points + forecaster.chunk_points
        raise UserError(f"no series has the {window} points of one training window: pass a longer file or lower --context-points")
    return forecaster.save_adapter(adapters_dir), forecaster
