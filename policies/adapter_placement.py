"""Adapter pre-placement: load the LoRA adapters a location asks for most at its edge site
before the requests arrive."""

from __future__ import annotations

from nm_toolkit.schemas import Decision, PlaceAdapter
from policies.base import Policy, PolicyContext


def popular_adapters(counts: dict[str, float], top_k: int, min_share: float) -> list[tuple[str, float]]:
    """The ``top_k`` adapters by share of requests, keeping those at or above ``min_share``."""
    total = sum(max(0.0, c) for c in counts.values())
    if total <= 0:
        return []
    ranked = sorted(((name, c / total) for name, c in counts.items()), key=lambda item: (-item[1], item[0]))
    return [(name, share) for name, share in ranked[:top_k] if share >= min_share]


class AdapterPlacementPolicy(Policy):
    """One PlaceAdapter decision per (site, popular adapter)."""

    name = "adapter_placement"

    def __init__(self, top_k: int = 2, min_share: float = 0.1) -> None:
        self.top_k = top_k
        self.min_share = min_share

    def decide(self, context: PolicyContext) -> list[Decision]:
        decisions: list[Decision] = []
        for site, counts in sorted(context.adapter_popularity.items()):
            for adapter, share in popular_adapters(counts, self.top_k, self.min_share):
                decisions.append(
                    PlaceAdapter(
                        **self.stamp(context, site, adapter),
                        target=site,
                        adapter=adapter,
                        reason=f"adapter {adapter} serves {share:.0%} of recent requests at {site}",
                    )
                )
        return decisions
