"""What an edge model costs to serve, measured on the machine it runs on and kept in its model card.

Model placement (:mod:`policies.model_placement`) picks, per edge site, the edge model (fp32 or
int8) that fits the site's latency and memory budget. It reads these measurements, not names or
parameter counts: :func:`profile_completer` times the edge's real work (prepare + grounded
completion of the city task's held-out requests, in the service's batches) and
:func:`record_profiles` writes the figures under ``serving`` in the base model's ``nmt_card.json``
(``nmt llm profile`` does both, for fp32 and int8).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nm_toolkit.llm.card import CARD_JSON

if TYPE_CHECKING:  # the policy that reads cards must not import torch
    from nm_toolkit.config import Settings
    from nm_toolkit.llm.netgpt import EdgeCompleter, EdgeRequest

SERVING_KEY = "serving"
VARIANTS = ("fp32", "int8")


@dataclass(frozen=True)
class ServingProfile:
    """One variant of an edge model served here: latency of a batch of ``batch`` requests (p50,
    p95), throughput, and the size of its weights."""

    variant: str
    p50_ms: float
    p95_ms: float
    requests_per_s: float
    weights_mb: float
    batch: int
    requests: int
    machine: str
    measured_at: str


def profile_completer(completer: EdgeCompleter, requests: Sequence[EdgeRequest], batch: int, variant: str) -> ServingProfile:
    """Serve ``requests`` in batches of ``batch`` (one warm-up batch first) and time each batch."""
    from nm_toolkit.llm.quantize import serialized_mb

    prepared = [completer.prepare(r) for r in requests]
    completer.complete(prepared[:batch])  # warm-up: first-call allocation is not serving cost
    latencies = []
    started = time.perf_counter()
    for i in range(0, len(prepared), batch):
        begun = time.perf_counter()
        completer.complete(prepared[i : i + batch])
        latencies.append((time.perf_counter() - begun) * 1000)
    elapsed = time.perf_counter() - started
    return ServingProfile(
        variant=variant, p50_ms=round(float(np.percentile(latencies, 50)), 2), p95_ms=round(float(np.percentile(latencies, 95)), 2),
        requests_per_s=round(len(prepared) / elapsed, 2), weights_mb=round(serialized_mb(completer.lm.model), 2), batch=batch,
        requests=len(prepared), machine=f"{platform.machine()} {platform.processor() or platform.system()}",
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip


def profile_edge(settings: Settings, requests: int, batch: int | None = None, on_variant: Callable[[str], None] = lambda _: None) -> list[ServingProfile]:
    """The configured edge model served fp32 and int8 on ``requests`` held-out city requests of
    its context store, in batches of ``batch`` (default ``llm.max_batch``), written into its card."""
    from nm_toolkit.llm.city_qa import build_city_qa_dataset
    from nm_toolkit.llm.context import ContextStore
    from nm_toolkit.llm.deployment import LlmPaths, edge_completer
    from nm_toolkit.llm.netgpt import EdgeRequest

    paths = LlmPaths.from_settings(settings)
    _, held_out = build_city_qa_dataset(ContextStore.load(paths.context_store), 0, requests, seed=0)
    asked = [EdgeRequest(e.text, e.cell, e.user) for e in held_out]
    profiles = []
    for variant in VARIANTS:
        on_variant(variant)
        llm = settings.llm.model_copy(update={"quantize_edge": variant == "int8"})
        profiles.append(profile_completer(edge_completer(settings.model_copy(update={"llm": llm})), asked, batch or settings.llm.max_batch, variant))
    record_profiles(paths.edge_model, profiles)
    return profiles


def record_profiles(model_dir: Path, profiles: Sequence[ServingProfile]) -> None:
    """Write ``profiles`` under ``serving`` in the model's card (other variants' figures stay)."""
    path = model_dir / CARD_JSON
    card = json.loads(path.read_text()) if path.is_file() else {}
    card[SERVING_KEY] = {**card.get(SERVING_KEY, {}), **{p.variant: asdict(p) for p in profiles}}
    path.write_text(json.dumps(card, indent=1))


def read_profiles(model_dir: Path) -> dict[str, ServingProfile]:
    """The measured variants of the model at ``model_dir`` (none when it was never profiled)."""
    path = model_dir / CARD_JSON
    if not path.is_file():
        return {}
    serving = json.loads(path.read_text()).get(SERVING_KEY, {})
    return {variant: ServingProfile(**figures) for variant, figures in serving.items()}
