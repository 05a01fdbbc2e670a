"""Wiring from settings: where the models, adapters and context live, and the edge and cloud models
built on them (the services are :func:`nm_toolkit.llm.service.edge_service` and
:func:`nm_toolkit.llm.cloud_service.cloud_service`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nm_toolkit.config import Settings
from nm_toolkit.llm.context import ContextStore
from nm_toolkit.llm.generation import AdapterLM, GenerationLimits
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.netgpt import COMPLETION_TASK, CloudResponder, EdgeCompleter
from nm_toolkit.llm.placement import startup_adapters
from nm_toolkit.llm.service_class import ServiceClassifier, ServiceClassProbe


@dataclass(frozen=True)
class LlmPaths:
    edge_model: Path
    cloud_model: Path
    adapters_dir: Path
    cloud_adapters_dir: Path
    context_store: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmPaths:
        root = settings.state_dir / "llm"
        cfg = settings.llm
        return cls(
            cfg.edge_model or root / "edge",
            cfg.cloud_model or root / "cloud",
            cfg.adapters_dir or root / "adapters",
            cfg.cloud_adapters_dir or root / "cloud-adapters",
            cfg.context_store or root / "context.json",
        )


def generation_limits(settings: Settings) -> GenerationLimits:
    cfg = settings.llm
    return GenerationLimits(max_input_tokens=cfg.max_input_tokens, max_new_tokens=cfg.max_new_tokens, timeout_s=cfg.request_timeout_s)


def edge_completer(settings: Settings) -> EdgeCompleter:
    """The edge model with its start-up adapters loaded (the completion adapter first, at most
    ``llm.adapter_budget``: :func:`~nm_toolkit.llm.placement.startup_adapters`), and the edge's
    context store."""
    paths = LlmPaths.from_settings(settings)
    registry = AdapterRegistry(paths.adapters_dir)
    adapters = startup_adapters(registry.cards(), settings.llm.adapter_budget, COMPLETION_TASK)
    lm = AdapterLM.load(paths.edge_model, registry, adapters=adapters, quantize=settings.llm.quantize_edge)
    return EdgeCompleter(lm, ContextStore.load(paths.context_store), generation_limits(settings))


def service_classifier(settings: Settings, lm: AdapterLM | None = None) -> ServiceClassifier:
    """The edge service's classifier of user prompts: the edge model (``lm``, else the configured
    base alone) with the service-class probe fitted next to its adapters (without one the keyword
    rules decide), at the configured confidence."""
    paths = LlmPaths.from_settings(settings)
    lm = lm or AdapterLM.load(paths.edge_model, quantize=settings.llm.quantize_edge)
    return ServiceClassifier(lm, ServiceClassProbe.load(paths.adapters_dir), settings.llm.service_class_confidence)


def cloud_responder(settings: Settings) -> CloudResponder:
    """The cloud model with every tenant adapter registered under ``llm.cloud_adapters_dir`` loaded."""
    paths = LlmPaths.from_settings(settings)
    return CloudResponder(AdapterLM.load(paths.cloud_model, AdapterRegistry(paths.cloud_adapters_dir)), generation_limits(settings))
