"""NetGPT's location-based prompt completion as a supervised data set.

A user sends a concise prompt ("coffee near me?", "is a pharmacy open now?"); the edge knows where
and who the user is and completes it into the comprehensive prompt the cloud model should answer.
Requests are of one of :data:`KINDS`, and the completed prompt says which in its first words
(:data:`KIND_LEADS`), so the edge's choice of kind and category is made on the same few words.
The split keeps whole districts (hence cells and their places) and whole phrasings out of
training, so the held-out score measures generalisation to unseen locations and unseen wordings,
not memorisation.

The place a request is answered with is personal: the nearest place of its category that meets
what the user's profile needs (:func:`suggested_by_category`: a vegetarian gets the nearest
restaurant with vegetarian options, a wheelchair user the nearest step-free pharmacy, a user on a
tight budget the nearest cheap supermarket), else the nearest. The edge knows the profile; the
completed prompt names the place it chose and the walking time (arithmetic the edge does), never
the profile.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from nm_toolkit.errors import UserError
from nm_toolkit.llm.context import POI_CATEGORIES, ContextStore, LocationContext, PointOfInterest, UserProfile, needed_feature

TRAIN_FRAMES: tuple[str, ...] = (
    "{noun} near me", "find a {noun} nearby", "where is the closest {noun}?", "any {noun} around here?",
    "I need a {noun}", "show me a {noun} close by", "{noun}?", "take me to a {noun}",
)
TEST_FRAMES: tuple[str, ...] = ("looking for a {noun}", "is there a {noun} nearby?", "nearest {noun} please")
# requests that ask whether a place is open: the same split of phrasings, train and held out
OPEN_TRAIN_FRAMES: tuple[str, ...] = (
    "is there a {noun} open now?", "any {noun} still open?", "find me an open {noun}", "{noun} open right now?",
    "I need a {noun} that is open", "which {noun} is open?",
)
OPEN_TEST_FRAMES: tuple[str, ...] = ("open {noun} around here?", "is any {noun} open at this hour?", "need an open {noun} now")
TIMES_OF_DAY: tuple[str, ...] = ("morning", "afternoon", "evening", "night")
# the hour that stands for each period (the data set stores the period, not the instant)
TIME_OF_DAY_HOURS: dict[str, int] = {"morning": 9, "afternoon": 14, "evening": 19, "night": 23}

# What a request asks about the nearest place of its category: "nearest" (where is it) or
# "open" (is it open now). The completed prompt starts with the kind's lead words.
KINDS: tuple[str, ...] = ("nearest", "open")
KIND_LEADS: dict[str, str] = {"nearest": "Recommend a", "open": "Find an open"}


@dataclass(frozen=True)
class CompletionExample:
    """One pair: what the model reads at the edge (``input``) and the prompt it should write."""

    text: str
    cell: str
    user: str
    time_of_day: str
    category: str
    input: str
    target: str
    kind: str = "nearest"  # last and defaulted: JSONL files written before kinds still load


WALKING_M_PER_MIN = 80


def walking_minutes(distance_m: int) -> int:
    """Minutes on foot at :data:`WALKING_M_PER_MIN`, rounded up (at least 1)."""
    return max(1, math.ceil(distance_m / WALKING_M_PER_MIN))


def nearest_by_category(pois: tuple[PointOfInterest, ...]) -> dict[str, PointOfInterest]:
    """The closest place of every category (``pois`` need not be sorted)."""
    best: dict[str, PointOfInterest] = {}
    for poi in pois:
        if poi.category not in best or poi.distance_m < best[poi.category].distance_m:
            best[poi.category] = poi
    return best


def suggested_by_category(pois: tuple[PointOfInterest, ...], profile: UserProfile | None) -> dict[str, PointOfInterest]:
    """The place to suggest for every category: the nearest that has the feature ``profile`` needs
    for that category (:func:`~nm_toolkit.llm.context.needed_feature`), else the nearest."""
    best = nearest_by_category(pois)
    if profile is None:
        return best
    for category, nearest in list(best.items()):
        feature = needed_feature(profile, category)
        if feature is None or feature in nearest.features:
            continue
        suited = [p for p in pois if p.category == category and feature in p.features]
        if suited:
            best[category] = min(suited, key=lambda p: p.distance_m)
    return best


def places_text(context: LocationContext) -> str:
    """The places of ``context``'s cell the edge would suggest, one per category, nearest first."""
    suggested = suggested_by_category(context.cell.pois, context.profile).values()
    return "; ".join(f"{p.name} ({p.category}, {p.distance_m} m)" for p in sorted(suggested, key=lambda p: p.distance_m))


def edge_input(text: str, context: LocationContext) -> str:
    """The edge model's input: compact context (district, time of day, the user's profile), then
    the user's words, then the cue to complete. The places are not in it: the edge model chooses
    what the user asks for (kind and category), and grounding (:mod:`nm_toolkit.llm.grounding`)
    takes the place, its distance and rating from the context store, so the input stays a few dozen
    tokens and the edge's pass over it cheap."""
    return (
        f"{context.cell.district} | {context.time_of_day} | {context.profile.role}, {context.profile.preference}\n"
        f"request: {text.strip()}\nprompt:"
    )


def render_prompt(category: str, poi: PointOfInterest, context: LocationContext, kind: str = "nearest") -> str:
    """The completed prompt for ``poi`` as the answer to a request of ``kind`` for ``category``.

    It carries what the cloud needs to answer and nothing :data:`nm_toolkit.llm.privacy.DEFAULT_POLICY`
    denies: the request (kind and category first, so that the choice is made on the first words),
    the district and the time of day, the place's name, distance, walking time and rating. Never the
    cell id, the coordinates, the user id, or the user's role and preference (nor the feature the
    place was chosen for): those stay at the edge.
    """
    minutes = walking_minutes(poi.distance_m)
    return (
        f"{KIND_LEADS[kind]} {category} near me in {context.cell.district} this {context.time_of_day}. "
        f"Suggested {category}: {poi.name}, {poi.distance_m} m away ({minutes} min on foot), rated {poi.rating:.1f}."
    )


def request_part(completed: str) -> str:
    """The request sentence of a completed prompt ("Find an open pharmacy near me in Brera this
    evening."): what the edge model writes; :func:`render_prompt` grounds the rest."""
    head, _, _ = completed.partition(". Suggested ")
    return head if head.endswith(".") else head + "."


def comprehensive_prompt(category: str, context: LocationContext, kind: str = "nearest") -> str:
    """The reference completion: :func:`render_prompt` for the place of ``category`` to suggest to
    the context's user (:func:`suggested_by_category`)."""
    return render_prompt(category, suggested_by_category(context.cell.pois, context.profile)[category], context, kind)


def cloud_only_payload(text: str, context: LocationContext) -> bytes:
    """What a cloud-only deployment must ship instead: the prompt plus the raw location context."""
    return json.dumps({"text": text, "context": asdict(context)}, separators=(",", ":")).encode()


def held_out_districts(store: ContextStore, share: float, seed: int) -> set[str]:
    districts = sorted({c.district for c in store.cells.values()})
    count = max(1, round(len(districts) * share))
    return set(random.Random(seed).sample(districts, count))


def build_completion_dataset(
    store: ContextStore, train_size: int, test_size: int, seed: int, test_share: float = 0.25, open_share: float = 0.0
) -> tuple[list[CompletionExample], list[CompletionExample]]:
    """Train and test pairs; test cells lie in held-out districts and use held-out phrasings.

    ``open_share`` of the requests are of kind "open" (0: every request is "nearest", and the
    pairs are those drawn before kinds existed, draw for draw)."""
    rng = random.Random(seed)
    test_districts = held_out_districts(store, test_share, seed)
    train_cells = [c for c in store.cells.values() if c.district not in test_districts]
    test_cells = [c for c in store.cells.values() if c.district in test_districts]
    users = sorted(store.profiles)

    def sample(cells: list, frames: dict[str, tuple[str, ...]], count: int) -> list[CompletionExample]:
        out = []
        for _ in range(count):
            cell, user = rng.choice(cells), rng.choice(users)
            category = rng.choice(list(POI_CATEGORIES))
            kind = "open" if open_share and rng.random() < open_share else "nearest"
            text = rng.choice(frames[kind]).format(noun=rng.choice(POI_CATEGORIES[category]))
            context = LocationContext(cell, rng.choice(TIMES_OF_DAY), store.profiles[user])
            out.append(
                CompletionExample(
                    text, cell.cell, user, context.time_of_day, category,
                    edge_input(text, context), comprehensive_prompt(category, context, kind), kind,
                )
            )
        return out

    train = sample(train_cells, {"nearest": TRAIN_FRAMES, "open": OPEN_TRAIN_FRAMES}, train_size)
    return train, sample(test_cells, {"nearest": TEST_FRAMES, "open": OPEN_TEST_FRAMES}, test_size)


def write_jsonl(path: Path, examples: list[CompletionExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for example in examples:
            out.write(json.dumps(asdict(example)) + "\n")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(input, target) pairs of a JSONL training file; any extra fields are ignored."""
    if not path.is_file():
        raise UserError(f"no data file at {path}: pass a JSONL file with 'input' and 'target' fields")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append((str(record["input"]), str(record["target"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{number}: expected a JSON object with 'input' and 'target' ({exc})") from exc
    if not pairs:
        raise UserError(f"{path} holds no examples: add JSON lines with 'input' and 'target'")
    return pairs


def read_examples(path: Path) -> list[CompletionExample]:
    """Examples written by :func:`write_jsonl` (with their location fields, for evaluation)."""
    read_pairs(path)  # same validation and messages
    return [CompletionExample(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
