"""The toolkit's NetGPT models: a pretrained LLaMA at the edge and in the cloud, each personalised
with LoRA adapters trained on the city task the toolkit generates.

:func:`build_netgpt` lays out what the edge and cloud services load (the paths of
:class:`~nm_toolkit.llm.deployment.LlmPaths`): a synthetic city (the edge's context store), the
edge model with its completion adapter (LoRA on the request sentences of
:mod:`nm_toolkit.llm.city_qa`'s completed prompts) and its service-class probe, and the cloud model
with one adapter per tenant. The default size (:data:`SIZES`) puts both on SmolLM2-135M-Instruct,
fetched from the package index (:mod:`nm_toolkit.llm.pretrained`); the edge only ranks grounded
candidates with it, the cloud generates. The ``tiny`` size pre-trains two
from-scratch models of a few hundred thousand parameters in seconds, for tests.

Each piece is skipped when it is already built with the same configuration, so a second run is
cheap; adapters the project ships (``prebuilt``, :data:`PREBUILT_DIR`) are taken as they are when
their configuration matches, so a first ``nmt demo`` trains nothing.
"""

from __future__ import annotations

import json
import os
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
from nm_toolkit.llm.pretrained import DEFAULT_PRETRAINED, fetch_pretrained
from nm_toolkit.llm.service_class import PROBE_FILE, ProbeConfig, ServiceClassProbe, fit_service_class_probe

EDGE_ADAPTER = "completion"
TINY_CORPUS = CorpusConfig(user_prompts=200, intents=100, telemetry=100, contexts=100, vocabulary_repeats=1)


# LoRA on the attention projections of a pretrained LLaMA: rank 8 is a few megabytes per adapter.
PRETRAINED_TARGETS = ("q_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class BuildConfig:
    """What :func:`build_netgpt` trains: the two bases, their adapters, and on how many examples.

    ``pretrained``: both bases are this checkpoint of :data:`~nm_toolkit.llm.pretrained.PRETRAINED`
    (fetched on first use); None: ``edge_init`` and ``cloud_init`` are pre-trained here from scratch.
    """

    pretrained: str | None = DEFAULT_PRETRAINED
    edge_init: InitConfig = field(default_factory=lambda: InitConfig(arch="gpt2", preset="edge", steps=1000))
    cloud_init: InitConfig = CLOUD_INIT
    edge_lora: LoraTrainConfig = field(
        default_factory=lambda: LoraTrainConfig(rank=8, alpha=16, target_modules=PRETRAINED_TARGETS, epochs=1.5, batch_size=8, learning_rate=2e-3)
    )
    cloud_lora: LoraTrainConfig = CLOUD_LORA
    edge_examples: int = 640
    cloud_examples: int = 400
    service_class_probe: ProbeConfig = ProbeConfig()
    seed: int = 0


SIZES: dict[str, BuildConfig] = {
    # SmolLM2-135M-Instruct at the edge and in the cloud; its adapters train in minutes on two CPU
    # cores and ship with the toolkit (PREBUILT_DIR)
    "default": BuildConfig(),
    # seconds: a working pipeline with meaningless answers (tests)
    "tiny": BuildConfig(
        pretrained=None,
        edge_init=InitConfig(arch="gpt2", preset="tiny", steps=20, batch_size=8, corpus=TINY_CORPUS),
        edge_lora=LoraTrainConfig(rank=4, alpha=8, epochs=0.5, learning_rate=1e-2, batch_size=8),
        cloud_init=InitConfig(arch="llama", preset="tiny", steps=20, batch_size=8, corpus=TINY_CORPUS),
        cloud_lora=LoraTrainConfig(rank=4, alpha=8, epochs=0.2, learning_rate=2e-3, batch_size=8, max_length=192),
        edge_examples=64,
        cloud_examples=32,
        service_class_probe=ProbeConfig(examples=64),
    ),
}
# The adapters of the default size, trained by `nmt llm build` and shipped with the package.
PREBUILT_DIR = Path(__file__).parent / "prebuilt" / DEFAULT_PRETRAINED


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
    fingerprint = _fingerprint({"base": edge_dir.resolve().name, "lora": asdict(lora), "train": len(pairs), "first": pairs[0]})
    if _built_with(registry, EDGE_ADAPTER, fingerprint):
        return None
    model, tokenizer = load_causal_lm(edge_dir)
    tuner = LoraFineTuner(lora).fit(model, tokenizer, pairs, EDGE_ADAPTER)
    card = AdapterCard(EDGE_ADAPTER, COMPLETION_TASK, edge_dir.resolve().name, train_examples=len(pairs), train_seconds=round(tuner.seconds_, 1), config=fingerprint)
    registry.save(tuner.model_, card, tuner.losses_)
    return card


def build_service_class(edge_dir: Path, adapters_dir: Path, config: ProbeConfig) -> ServiceClassProbe | None:
    """The edge's service-class probe (:mod:`nm_toolkit.llm.service_class`) on the edge base, saved
    next to its adapters; None when it is already fitted with this config."""
    fingerprint = _fingerprint({"base": edge_dir.resolve().name, "probe": asdict(config)})
    if (found := ServiceClassProbe.load(adapters_dir)) is not None and found.facts.get("fingerprint") == fingerprint:
        return None
    return fit_service_class_probe(edge_dir, adapters_dir, config, fingerprint)


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


def build_netgpt(
    root: Path, config: BuildConfig, on_stage: Callable[[str], None] = lambda _: None, prebuilt: Path | None = None
) -> BuiltModels:
    """Build everything the edge and cloud services load under ``root`` (skipping what is built).

    With ``config.pretrained`` the edge and cloud models are links to the fetched checkpoint.
    ``prebuilt``: a directory laid out as ``root`` (``adapters/``, ``cloud-adapters/``) whose
    adapters are copied in first; each is kept when its card's configuration is the one this build
    would train, and retrained otherwise."""
    built = BuiltModels.at(root)
    store, train, _ = city_task(config.seed, max(config.edge_examples, config.cloud_examples))
    if not built.context_store.is_file():
        store.save(built.context_store)
    if config.pretrained is not None:
        base = fetch_pretrained(config.pretrained, on_stage=on_stage)
        for link in (built.edge_model, built.cloud_model):
            _link(link, base)
    if prebuilt is not None:
        for registry in ("adapters", "cloud-adapters"):
            _seed(prebuilt / registry, root / registry)
    on_stage("edge completion adapter")
    build_edge(built.edge_model, AdapterRegistry(built.adapters_dir), train[: config.edge_examples], replace(config.edge_init, seed=config.seed), config.edge_lora)
    on_stage("edge service-class probe")
    build_service_class(built.edge_model, built.adapters_dir, replace(config.service_class_probe, seed=config.seed))
    on_stage("cloud tenant adapters")
    build_cloud(built.cloud_model, AdapterRegistry(built.cloud_adapters_dir), train[: config.cloud_examples], store,
                replace(config.cloud_init, seed=config.seed), config.cloud_lora)  # fmt: skip
    return built


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target`` (a symlink, replaced when it points elsewhere)."""
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        raise FileExistsError(f"{link} is a model directory; remove it to use the pretrained checkpoint {target}")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=True)


def _seed(source: Path, registry: Path) -> None:
    """Copy every adapter of ``source`` (and its service-class probe) that ``registry`` does not have yet."""
    if not source.is_dir():
        return
    for item in sorted(source.iterdir()):
        if (item / ADAPTER_CARD).is_file() and not (registry / item.name / ADAPTER_CARD).is_file():
            shutil.copytree(item, registry / item.name, dirs_exist_ok=True)
        elif item.name == PROBE_FILE and not (registry / PROBE_FILE).is_file():
            registry.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, registry / PROBE_FILE)
