"""Example third-party policies: one useful, one that raises, one that overruns its budget."""

from __future__ import annotations

import time

from nm_toolkit.schemas import Decision, RateLimit
from policies import Policy, PolicyContext


class CellCapPolicy(Policy):
    """Cap every cell with a capacity entry at ``share`` of that capacity (in kbit/s)."""

    name = "example_cell_cap"

    def __init__(self, share: float = 0.5, kbps_per_unit: float = 1000.0) -> None:
        self.share = share
        self.kbps_per_unit = kbps_per_unit

    def decide(self, context: PolicyContext) -> list[Decision]:
        return [
            RateLimit(
                **self.stamp(context, cell),
                target=cell,
                rate_kbps=capacity * self.share * self.kbps_per_unit,
                reason=f"example plug-in caps {cell} at {self.share:.0%} of {capacity:g}",
            )
            for cell, capacity in sorted(context.capacities.items())
        ]


class BrokenPolicy(Policy):
    name = "example_broken"

    def decide(self, context: PolicyContext) -> list[Decision]:
        raise RuntimeError("this plug-in is broken on purpose")


class SlowPolicy(Policy):
    name = "example_slow"

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds

    def decide(self, context: PolicyContext) -> list[Decision]:
        time.sleep(self.seconds)
        return []
