"""The toolkit's own NetGPT models, trained on the city task it generates, for when no checkpoint
is at hand.

:func:`build_netgpt` lays out what the edge and cloud services load (the paths of
:class:`~nm_toolkit.llm.deployment.LlmPaths`): a synthetic city (the edge's context store), the
edge GPT-2 with its completion adapter (LoRA on the two-kind completed prompts of
:mod:`nm_toolkit.llm.city_qa`), and the cloud LLaMA with one adapter per tenant. Each piece is
skipped when it is already built with the same configuration, so a second run is cheap.
``nmt llm build`` and ``bench/netgpt.py`` both use it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from nm_toolkit.llm.city_qa import (
    CLOUD_INIT,
    CLOUD_LORA,
    CityQAExample,
    build_city_qa_dataset,
    build_cloud_base,
    edge_pairs,
    train_cloud_adapters,
)
from nm_toolkit.llm.context import ContextStore, synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import ADAPTER_CARD, AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.netgpt import COMPLETION_TASK
from nm_toolkit.llm.offline import load_causal_lm
from nm_toolkit.llm.service_class import SERVICE_CLASS_ADAPTER, train_service_class_adapter

EDGE_ADAPTER = "completion"
TINY_CORPUS = CorpusConfig(user_prompts=200, intents=100, telemetry=100, contexts=100, vocabulary_repeats=1)


@dataclass(frozen=True)
class BuildConfig:
    """What :func:`build_netgpt` trains: the two bases, their adapters, and on how many examples."""

    edge_init: InitConfig = field(default_factory=lambda: InitConfig(arch="gpt2", preset="edge", steps=1000))
    edge_lora: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(rank=32, alpha=64, epochs=2.5, learning_rate=1e-2))
    cloud_init: InitConfig = CLOUD_INIT
    cloud_lora: LoraTrainConfig = CLOUD_LORA
    edge_examples: int = 1500
    cloud_examples: int = 800
    service_class_lora: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(rank=8, alpha=16, epochs=3.0, learning_rate=5e-3))
    service_class_examples: int = 2000
    seed: int = 0


SIZES: dict[str, BuildConfig] = {
    # minutes on one CPU core; what bench/netgpt.py measures
    "default": BuildConfig(),
    # seconds: a working pipeline with meaningless answers (tests, a first look)
    "tiny": BuildConfig(
        edge_init=InitConfig(arch="gpt2", preset="tiny", steps=20, batch_size=8, corpus=TINY_CORPUS),
        edge_lora=LoraTrainConfig(rank=4, alpha=8, epochs=0.5, learning_rate=1e-2, batch_size=8),
        cloud_init=InitConfig(arch="llama", preset="tiny", steps=20, batch_size=8, corpus=TINY_CORPUS),
        cloud_lora=LoraTrainConfig(rank=4, alpha=8, epochs=0.2, learning_rate=2e-3, batch_size=8, max_length=192),
        edge_examples=64,
        cloud_examples=32,
        service_class_lora=LoraTrainConfig(rank=4, alpha=8, epochs=0.5, learning_rate=1e-2, batch_size=8),
        service_class_examples=64,
    ),
}


def city_task(seed: int, examples: int, test: int = 200) -> tuple[ContextStore, list[CityQAExample], list[CityQAExample]]:
    """The synthetic city of ``seed`` and its train / held-out city-task examples."""
    store = synthetic_city(seed=seed + 1)
    train, held_out = build_city_qa_dataset(store, examples, test, seed=seed + 1)
    return store, train, held_out


def build_edge(
    edge_dir: Path, registry: AdapterRegistry, train: Sequence[CityQAExample], init: InitConfig, lora: LoraTrainConfig,
    copy_from: Path | None = None,
) -> AdapterCard | None:  # fmt: skip
    """The edge base (copied from ``copy_from`` or pre-trained) and its completion adapter; returns
    the adapter's card when it was trained now (None: already built with this config and data)."""
    if not (edge_dir / "config.json").is_file():
        if copy_from is not None:
            shutil.copytree(copy_from, edge_dir)
        else:
            save_initialised(edge_dir, *initialise_model(init))
    pairs = edge_pairs(train)
    fingerprint = _fingerprint({"lora": asdict(lora), "train": len(pairs), "first": pairs[0]})
    if _built_with(registry, EDGE_ADAPTER, fingerprint):
        return None
    model, tokenizer = load_causal_lm(edge_dir)
    tuner = LoraFineTuner(lora).fit(model, tokenizer, pairs, EDGE_ADAPTER)
    card = AdapterCard(EDGE_ADAPTER, COMPLETION_TASK, str(edge_dir), train_examples=len(pairs), train_seconds=round(tuner.seconds_, 1), config=fingerprint)
    registry.save(tuner.model_, card, tuner.losses_)
    return card


def build_service_class(edge_dir: Path, registry: AdapterRegistry, lora: LoraTrainConfig, examples: int, seed: int) -> AdapterCard | None:
    """The edge's service-class adapter (:mod:`nm_toolkit.llm.service_class`) on the edge base; None
    when it is already built with this config."""
    fingerprint = _fingerprint({"lora": asdict(lora), "examples": examples, "seed": seed})
    if _built_with(registry, SERVICE_CLASS_ADAPTER, fingerprint):
        return None
    return train_service_class_adapter(edge_dir, registry, lora, examples, seed, fingerprint)


def _fingerprint(config: dict[str, object]) -> dict[str, object]:
    """``config`` as it reads back from an adapter card (JSON: tuples become lists)."""
    return json.loads(json.dumps(config))


def _built_with(registry: AdapterRegistry, name: str, fingerprint: dict[str, object]) -> bool:
    """Whether adapter ``name`` of ``registry`` was trained with ``fingerprint`` (its card's config)."""
    card_file = registry.path(name) / ADAPTER_CARD
    return card_file.is_file() and json.loads(card_file.read_text()).get("config") == fingerprint


def build_cloud(
    cloud_dir: Path, registry: AdapterRegistry, train: Sequence[CityQAExample], store: ContextStore, init: InitConfig, lora: LoraTrainConfig
) -> list[AdapterCard]:
    """The cloud base (pre-trained unless there) and one adapter per tenant."""
    build_cloud_base(cloud_dir, init)
    return train_cloud_adapters(cloud_dir, registry, train, store, lora)


@dataclass(frozen=True)
class BuiltModels:
    context_store: Path
    edge_model: Path
    adapters_dir: Path
    cloud_model: Path
    cloud_adapters_dir: Path

    @classmethod
    def at(cls, root: Path) -> BuiltModels:
        """Where :func:`build_netgpt` puts each piece under ``root``."""
        return cls(root / "context.json", root / "edge", root / "adapters", root / "cloud", root / "cloud-adapters")

    def missing(self) -> list[Path]:
        """The pieces that are not there (a model without its config, a missing context store)."""
        files = (self.context_store, self.edge_model / "config.json", self.cloud_model / "config.json")
        return [path for path in files if not path.is_file()]


def build_netgpt(root: Path, config: BuildConfig, on_stage: Callable[[str], None] = lambda _: None) -> BuiltModels:
    """Build everything the edge and cloud services load under ``root`` (skipping what is built)."""
    built = BuiltModels.at(root)
    store, train, _ = city_task(config.seed, max(config.edge_examples, config.cloud_examples))
    if not built.context_store.is_file():
        store.save(built.context_store)
    on_stage("edge model and completion adapter")
    build_edge(built.edge_model, AdapterRegistry(built.adapters_dir), train[: config.edge_examples], replace(config.edge_init, seed=config.seed), config.edge_lora)
    on_stage("edge service-class adapter")
    build_service_class(built.edge_model, AdapterRegistry(built.adapters_dir), config.service_class_lora, config.service_class_examples, config.seed)
    on_stage("cloud model and tenant adapters")
    build_cloud(built.cloud_model, AdapterRegistry(built.cloud_adapters_dir), train[: config.cloud_examples], store,
                replace(config.cloud_init, seed=config.seed), config.cloud_lora)  # fmt: skip
    return built
