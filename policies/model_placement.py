"""Model placement: which edge model, fp32 or int8, each edge site serves, chosen from measurements.

NetGPT deploys "appropriate LLMs at the edge and the cloud in accordance with their computing
capacity". Each site declares a budget (the p95 latency of a batch, the memory its weights may
take, the requests per second one replica must serve); each candidate model's card holds what
serving it measured on the machine (:mod:`nm_toolkit.llm.profile`, ``nmt llm profile``). Per site,
the first candidate (they are listed best first) whose fp32 or else int8 variant fits the budget
is placed; a site no variant fits gets no decision (and a log line saying why). The process
supervisor of the site (``nmt llm supervise``) carries the decision out by restarting its edge
replicas on that model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nm_toolkit.llm.profile import VARIANTS, ServingProfile, read_profiles
from nm_toolkit.schemas import Decision, PlaceModel
from policies.base import Policy, PolicyContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteBudget:
    """What a site can give one edge replica; ``None``: no limit."""

    p95_ms: float | None = None
    memory_mb: float | None = None
    requests_per_s: float | None = None

    def misfit(self, profile: ServingProfile) -> str | None:
        """Why ``profile`` does not fit (None when it does)."""
        if self.p95_ms is not None and profile.p95_ms > self.p95_ms:
            return f"p95 {profile.p95_ms:g} ms > {self.p95_ms:g} ms"
        if self.memory_mb is not None and profile.weights_mb > self.memory_mb:
            return f"weights {profile.weights_mb:g} MB > {self.memory_mb:g} MB"
        if self.requests_per_s is not None and profile.requests_per_s < self.requests_per_s:
            return f"{profile.requests_per_s:g} requests/s < {self.requests_per_s:g}"
        return None


def choose_model(options: Sequence[tuple[str, ServingProfile]], budget: SiteBudget) -> tuple[str, ServingProfile] | None:
    """The first (model, variant) of ``options`` that fits ``budget``."""
    return next(((model, profile) for model, profile in options if budget.misfit(profile) is None), None)


class ModelPlacementPolicy(Policy):
    """One ``place_model`` decision per site in ``sites`` that a measured candidate fits.

    ``candidates``: edge model directories, best first; ``sites``: site -> budget
    (``{"p95_ms": 800, "memory_mb": 20, "requests_per_s": 5}``, any subset).
    """

    name = "model_placement"

    def __init__(self, candidates: Sequence[str] = (), sites: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.candidates = candidates
        self.sites = sites

    def options(self) -> list[tuple[str, ServingProfile]]:
        """(model, measured variant) pairs in preference order: candidates in order, fp32 before int8."""
        options = []
        for model in self.candidates:
            profiles = read_profiles(Path(model))
            options += [(model, profiles[v]) for v in VARIANTS if v in profiles]
        return options

    def decide(self, context: PolicyContext) -> list[Decision]:
        options = self.options()
        decisions: list[Decision] = []
        for site, limits in sorted((self.sites or {}).items()):
            budget = SiteBudget(**limits)
            chosen = choose_model(options, budget)
            if chosen is None:
                why = "; ".join(f"{m} {p.variant}: {budget.misfit(p)}" for m, p in options) or "no candidate has been profiled (`nmt llm profile`)"
                log.warning("no edge model fits site %s: %s", site, why)
                continue
            model, profile = chosen
            decisions.append(
                PlaceModel(
                    **self.stamp(context, site, model, profile.variant),
                    target=site,
                    model=model,
                    quantize=profile.variant == "int8",
                    reason=(
                        f"{model} ({profile.variant}) fits {site}: p95 {profile.p95_ms:g} ms per batch of {profile.batch}, "
                        f"{profile.weights_mb:g} MB, {profile.requests_per_s:g} requests/s (measured {profile.measured_at})"
                    ),
                )
            )
        return decisions
