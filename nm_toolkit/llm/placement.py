"""Which LoRA adapters an edge site keeps loaded: placed by decisions, within a memory budget.

The adapter-placement policy (:mod:`policies.adapter_placement`) forecasts which adapters a site's
requests will need and publishes ``place_adapter`` decisions; the edge service carries them out
between batches, when no request is in flight. :class:`AdapterPlacement` is the bookkeeping, pure:
an adapter is wanted while a decision placed it (until its TTL runs out); the budget bounds how
many are loaded at once, and what has to make room is the loaded adapter that is not wanted and
was used least recently.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from nm_toolkit.bus.base import Message
from nm_toolkit.bus.runtime import Emitter
from nm_toolkit.errors import validation_reason
from nm_toolkit.schemas import DecisionAdapter, DecisionBase

if TYPE_CHECKING:
    from nm_toolkit.llm.lora import AdapterCard

DecisionT = TypeVar("DecisionT", bound=DecisionBase)


def live_decisions(messages: Sequence[Message], out: Emitter, kind: type[DecisionT], target: str) -> Iterator[tuple[DecisionT, float]]:
    """The ``kind`` decisions for ``target`` in ``messages`` that are to be carried out (not dry
    runs, not expired), each with the seconds it has left; a message that is not a decision is
    dead-lettered, and a tombstone (a withdrawn decision) is skipped. What an actuator of the
    decisions topic reads."""
    wall = time.time()
    for message in messages:
        if not message.value:
            continue
        try:
            decision = DecisionAdapter.validate_json(message.value)
        except ValidationError as exc:
            out.dead_letter(message, f"not a decision: {validation_reason(exc)}")
            continue
        if isinstance(decision, kind) and decision.target == target and not decision.dry_run:
            left = decision.created_at.timestamp() + decision.ttl_seconds - wall
            if left > 0:
                yield decision, left


@dataclass(frozen=True)
class PlacementPlan:
    load: tuple[str, ...]
    unload: tuple[str, ...]


@dataclass
class AdapterPlacement:
    """Placements with their expiry and the last use of each adapter (times in any one clock)."""

    budget: int
    placed_until: dict[str, float] = field(default_factory=dict)
    last_used: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"an adapter budget must be at least 1, not {self.budget}")

    def place(self, adapter: str, until: float) -> None:
        """A decision wants ``adapter`` loaded until ``until`` (a later decision extends it)."""
        self.placed_until[adapter] = max(until, self.placed_until.get(adapter, until))

    def used(self, adapter: str, now: float) -> None:
        self.last_used[adapter] = now

    def wanted(self, now: float) -> list[str]:
        """Adapters placed and not expired, the longest-lasting placement first."""
        live = [(until, name) for name, until in self.placed_until.items() if until > now]
        return [name for _, name in sorted(live, key=lambda item: (-item[0], item[1]))]

    def plan(self, loaded: Set[str], available: Set[str], now: float) -> PlacementPlan:
        """What to load and unload so that the wanted adapters that exist are loaded, at most
        ``budget`` adapters are, and nothing wanted is evicted for something less wanted."""
        wanted = [name for name in self.wanted(now) if name in available][: self.budget]
        load = [name for name in wanted if name not in loaded]
        room = self.budget - len(loaded) - len(load)
        evictable = sorted((name for name in loaded if name not in wanted), key=lambda name: (self.last_used.get(name, float("-inf")), name))
        unload = evictable[: max(0, -room)]
        return PlacementPlan(tuple(load), tuple(unload))

    def room_for(self, adapter: str, loaded: Set[str], keep: Set[str], now: float) -> PlacementPlan:
        """What to unload so that ``adapter``, asked for by a request but not loaded (a miss),
        fits the budget: the loaded adapters outside ``keep`` (those the batch in hand uses), the
        ones no placement wants first, then the least recently used. ``unload`` is empty when
        there is room; ``load`` is empty when nothing can make room."""
        if len(loaded) < self.budget:
            return PlacementPlan((adapter,), ())
        wanted = set(self.wanted(now))
        candidates = sorted(
            (name for name in loaded if name not in keep),
            key=lambda name: (name in wanted, self.last_used.get(name, float("-inf")), name),
        )
        excess = len(loaded) - self.budget + 1
        if len(candidates) < excess:
            return PlacementPlan((), ())
        return PlacementPlan((adapter,), tuple(candidates[:excess]))


def startup_adapters(cards: Sequence[AdapterCard], budget: int, first_task: str) -> list[str]:
    """The adapters an edge loads when it starts: ``first_task``'s (every prompt needs one) before
    the others, no more than ``budget``. Placement decisions, read from the decisions table as the
    service starts, and requests that name another adapter load the rest."""
    ordered = sorted(cards, key=lambda card: card.task != first_task)
    return [card.name for card in ordered[:budget]]
