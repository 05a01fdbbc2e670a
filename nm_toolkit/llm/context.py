"""Location context the edge keeps about its users: cells, districts, points of interest, profiles.

NetGPT's edge model completes a short user prompt with this context; the context itself never
leaves the edge. :class:`ContextStore` is the edge's local copy (a JSON file), and
:func:`synthetic_city` builds a reproducible one for a city when no real gazetteer is at hand.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from nm_toolkit.errors import UserError

# Milan's districts (NIL, "nuclei di identità locale"): real place names for the synthetic city.
MILAN_DISTRICTS: tuple[str, ...] = (
    "Brera", "Navigli", "Isola", "Porta Romana", "Citta Studi", "Lambrate", "Bicocca", "Porta Venezia",
    "Sempione", "Ticinese", "Garibaldi", "Centrale", "Loreto", "Niguarda", "Bovisa", "San Siro",
    "Lorenteggio", "Corvetto", "Bande Nere", "Gallaratese", "Quarto Oggiaro", "Affori", "Greco",
    "Ortica", "Forlanini", "Vigentino", "Barona", "Baggio", "Tre Torri", "Magenta",
)

# Point-of-interest categories a user asks for, with the words people use for them.
POI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cafe": ("coffee shop", "cafe", "espresso bar"),
    "restaurant": ("restaurant", "place to eat", "trattoria"),
    "pharmacy": ("pharmacy", "chemist"),
    "atm": ("cash machine", "ATM"),
    "metro station": ("metro station", "subway stop"),
    "parking": ("parking garage", "car park"),
    "supermarket": ("supermarket", "grocery store"),
    "gym": ("gym", "fitness centre"),
}

_NAME_PARTS: dict[str, tuple[str, ...]] = {
    "cafe": ("Bar", "Caffe", "Torrefazione", "Pasticceria", "Espresso"),
    "restaurant": ("Trattoria", "Osteria", "Ristorante", "Pizzeria", "Bistro"),
    "pharmacy": ("Farmacia", "Parafarmacia"),
    "atm": ("Bancomat", "Banca", "Sportello"),
    "metro station": ("Fermata", "Stazione", "Metro"),
    "parking": ("Garage", "Parcheggio", "Autosilo"),
    "supermarket": ("Esselunga", "Carrefour", "Coop", "Conad", "Pam"),
    "gym": ("Palestra", "Fitness", "Sport Club"),
}
_SURNAMES = (
    "Rossi", "Bianchi", "Verdi", "Russo", "Ferrari", "Esposito", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "Costa", "Giordano", "Mancini", "Rizzo", "Lombardi", "Moretti",
    "Barbieri", "Fontana", "Santoro", "Mariani", "Rinaldi", "Caruso", "Ferrara", "Galli", "Martini", "Leone",
)
# Features a place may have that some users need (known by construction, so that a personalised
# answer can be scored): which preference needs which feature, for which categories.
FEATURES: tuple[str, ...] = ("vegetarian", "step-free", "budget")
PREFERENCE_NEEDS: dict[str, tuple[str, frozenset[str]]] = {
    "prefers vegetarian options": ("vegetarian", frozenset({"restaurant", "cafe"})),
    "needs step-free access": ("step-free", frozenset(POI_CATEGORIES) - {"parking", "atm"}),
    "is on a tight budget": ("budget", frozenset({"restaurant", "cafe", "supermarket", "gym"})),
}
_FEATURE_CATEGORIES: dict[str, frozenset[str]] = {feature: categories for feature, categories in PREFERENCE_NEEDS.values()}
FEATURE_SHARE = 0.4  # chance that a place of a category a feature applies to has it
# Categories a cell has more than one place of, so that the nearest is not always the one to suggest.
_EXTRA_CATEGORIES: tuple[str, ...] = ("restaurant", "cafe", "supermarket", "pharmacy", "gym", "metro station")
ROLES = ("student", "commuter", "tourist", "office worker", "retiree", "parent", "night shift nurse", "runner")
PREFERENCES = (
    "prefers vegetarian options", "pays by card only", "needs step-free access", "likes quiet places",
    "travels by bike", "is on a tight budget", "speaks English", "prefers open late places",
)


@dataclass(frozen=True)
class PointOfInterest:
    name: str
    category: str
    distance_m: int
    lat: float
    lon: float
    rating: float
    features: tuple[str, ...] = ()  # of :data:`FEATURES`


@dataclass(frozen=True)
class Cell:
    """One radio cell: its id, the district it covers, and the places near it."""

    cell: str
    district: str
    lat: float
    lon: float
    pois: tuple[PointOfInterest, ...]


@dataclass(frozen=True)
class UserProfile:
    user: str
    role: str
    preference: str


def needed_feature(profile: UserProfile, category: str) -> str | None:
    """The feature a place of ``category`` must have to suit ``profile`` (None: any place does)."""
    feature, categories = PREFERENCE_NEEDS.get(profile.preference, (None, frozenset()))
    return feature if category in categories else None


@dataclass(frozen=True)
class LocationContext:
    """Everything the edge knows about where and who a request comes from, at one moment."""

    cell: Cell
    time_of_day: str
    profile: UserProfile


def time_of_day(when: datetime) -> str:
    hour = when.hour
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


@dataclass
class ContextStore:
    """The edge's local cells and user profiles; requests name a cell and a user, never send these."""

    cells: dict[str, Cell] = field(default_factory=dict)
    profiles: dict[str, UserProfile] = field(default_factory=dict)

    def context(self, cell: str, user: str | None, when: datetime) -> LocationContext:
        """The context of a request from ``user`` in ``cell`` at ``when``; unknown users get a default."""
        found = self.cells.get(cell)
        if found is None:
            known = ", ".join(sorted(self.cells)[:5]) + (", ..." if len(self.cells) > 5 else "")
            raise UserError(
                f"unknown cell {cell!r}: this edge's context store (llm.context_store) knows {len(self.cells)} cells ({known}); "
                "send one of those, or point llm.context_store at the store that has it"
            )
        profile = self.profiles.get(user or "", UserProfile(user or "anonymous", "visitor", "has no stated preference"))
        return LocationContext(found, time_of_day(when), profile)

    def save(self, path: Path) -> None:
        data = {"cells": [asdict(c) for c in self.cells.values()], "profiles": [asdict(p) for p in self.profiles.values()]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> ContextStore:
        if not path.is_file():
            raise UserError(f"no location context store at {path}: create one with `nmt llm dataset -o DIR`")
        try:
            data = json.loads(path.read_text())
            cells = [
                Cell(c["cell"], c["district"], c["lat"], c["lon"], tuple(PointOfInterest(**{**p, "features": tuple(p.get("features", ()))}) for p in c["pois"]))
                for c in data["cells"]
            ]
            profiles = [UserProfile(**p) for p in data["profiles"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is not a location context store ({exc}): rebuild it with `nmt llm dataset`") from exc
        return cls({c.cell: c for c in cells}, {p.user: p for p in profiles})


def synthetic_city(
    seed: int, districts: int = 24, cells_per_district: int = 4, pois_per_cell: int = 12, users: int = 200
) -> ContextStore:
    """A reproducible city: every cell has ``pois_per_cell`` places, at least one of each category
    and the rest of :data:`_EXTRA_CATEGORIES`; each place has each feature that applies to its
    category (:data:`PREFERENCE_NEEDS`) with probability :data:`FEATURE_SHARE`."""
    rng = random.Random(seed)
    names = list(MILAN_DISTRICTS[:districts])
    categories = list(POI_CATEGORIES)
    cells: dict[str, Cell] = {}
    used: set[str] = set()
    for d, district in enumerate(names):
        for _ in range(cells_per_district):
            cell_id = f"MI-{rng.randrange(1000, 10000)}"
            while cell_id in cells:
                cell_id = f"MI-{rng.randrange(1000, 10000)}"
            lat, lon = 45.42 + 0.01 * d + rng.random() * 0.01, 9.10 + rng.random() * 0.15
            wanted = categories + [rng.choice(_EXTRA_CATEGORIES) for _ in range(max(0, pois_per_cell - len(categories)))]
            pois = []
            for category in wanted:
                name = f"{rng.choice(_NAME_PARTS[category])} {rng.choice(_SURNAMES)}"
                while name in used:
                    name = f"{rng.choice(_NAME_PARTS[category])} {rng.choice(_SURNAMES)} {rng.randrange(2, 99)}"
                used.add(name)
                pois.append(
                    PointOfInterest(
                        name, category, rng.randrange(40, 900, 10), round(lat + rng.uniform(-0.004, 0.004), 5),
                        round(lon + rng.uniform(-0.004, 0.004), 5), round(rng.uniform(3.0, 5.0), 1),
                        tuple(f for f, applies in _FEATURE_CATEGORIES.items() if category in applies and rng.random() < FEATURE_SHARE),
                    )
                )
            pois.sort(key=lambda p: p.distance_m)
            cells[cell_id] = Cell(cell_id, district, round(lat, 5), round(lon, 5), tuple(pois))
    profiles = {
        f"u{i:04d}": UserProfile(f"u{i:04d}", rng.choice(ROLES), rng.choice(PREFERENCES)) for i in range(users)
    }
    return ContextStore(cells, profiles)
