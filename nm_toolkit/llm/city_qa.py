"""City question answering: the task the edge and the cloud share, with answers known by construction.

A user asks about a place near them. Two kinds of request (:data:`nm_toolkit.llm.completion_data.KINDS`):

* ``"nearest"`` ("pharmacy near me?"): answerable from the edge's own facts. The grounded choice
  (:mod:`nm_toolkit.llm.grounding`) names the nearest place of the category with its distance and
  rating, and :func:`edge_answer` renders them with the walking time: the edge answers alone
  (:data:`LOCAL_KINDS`).
* ``"open"`` ("is there a pharmacy open now?"): also needs the opening hours, public city
  knowledge (:data:`OPENING_HOURS`) that the cloud model learnt in fine-tuning and the edge's
  context store does not hold. The edge can give the place but not whether it is open.

Answers are styled per tenant (:data:`TENANTS`): a walking-directions app wants the walking time
and the rating, a brief one the place and distance only. The cloud serves each tenant with its own
LoRA adapter on one LLaMA base (:func:`train_cloud_adapters`); the wrong adapter gives the wrong
style, which :func:`answer_score` (the share of the reference's facts the answer states) and
ROUGE-L both see.

The cloud is asked in one of three forms: the edge's completed prompt
(:func:`cloud_prompt`, NetGPT), the user's words alone (:func:`short_question`,
the cloud knows the time of day but nothing of the user's place), or the words with the raw
location context (:func:`context_question`, what a cloud-only deployment must ship:
:func:`nm_toolkit.llm.completion_data.cloud_only_payload`). A deployment's cloud adapters are
trained on the forms it is asked in: NetGPT's on the completed prompt (:data:`NETGPT_FORMS`), a
cloud-only deployment's on the other two (:data:`CLOUD_ONLY_FORMS`, what ``bench/netgpt.py``
compares against, with the same number of training steps). Mixing them cost NetGPT the place: on
questions that carry no place, the adapter learns to invent one, and then invents it for
completed prompts too (place named in 0 of 60 held-out completed prompts, 0.45 without the mix).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nm_toolkit.llm.completion_data import (
    TIME_OF_DAY_HOURS,
    CompletionExample,
    build_completion_dataset,
    nearest_by_category,
)
from nm_toolkit.llm.context import ContextStore, LocationContext, PointOfInterest, invented_place_name
from nm_toolkit.llm.copy_head import CopyHeadConfig, copy_head_facts, fit_copy_head
from nm_toolkit.llm.grounding import Candidate
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import ADAPTER_CARD, AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.offline import load_causal_lm

CITY_QA_TASK = "city_qa"
LOCAL_KINDS: frozenset[str] = frozenset({"nearest"})  # kinds the edge answers from its own facts
TENANTS: tuple[str, ...] = ("walk", "brief")
DEFAULT_TENANT = "walk"
WALKING_M_PER_MIN = 80
CLOUD_FORMS: tuple[str, ...] = ("completed", "short", "context")
NETGPT_FORMS: tuple[str, ...] = ("completed",)  # what the cloud is asked under NetGPT
CLOUD_ONLY_FORMS: tuple[str, ...] = ("short", "context")  # what a cloud-only deployment is asked

# Public city knowledge only the cloud model holds: opening hours (from, to) per category.
OPENING_HOURS: dict[str, tuple[int, int]] = {
    "cafe": (7, 20), "restaurant": (12, 23), "pharmacy": (8, 19), "atm": (0, 24),
    "metro station": (6, 24), "parking": (0, 24), "supermarket": (8, 21), "gym": (6, 22),
}  # fmt: skip


@dataclass(frozen=True)
class Fact:
    """One thing an answer must state: ``label`` ("place", "minutes", ...) and a pattern that finds it."""

    label: str
    pattern: str

    def found_in(self, answer: str) -> bool:
        return re.search(self.pattern, answer, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Reference:
    """A reference answer and the facts it states (its score is the share of them an answer states)."""

    text: str
    facts: tuple[Fact, ...]


@dataclass(frozen=True)
class CityQAExample:
    """One request end to end: the edge pair (``input`` -> ``completed``) and the cloud's reference answer."""

    text: str
    cell: str
    user: str
    time_of_day: str
    category: str
    kind: str
    tenant: str
    input: str
    completed: str
    answer: str


def walking_minutes(distance_m: int) -> int:
    """Minutes on foot at :data:`WALKING_M_PER_MIN`, rounded up (at least 1)."""
    return max(1, math.ceil(distance_m / WALKING_M_PER_MIN))


def is_open(category: str, time_of_day: str) -> bool:
    start, end = OPENING_HOURS[category]
    return start <= TIME_OF_DAY_HOURS[time_of_day] < end


def hours_text(category: str) -> str:
    start, end = OPENING_HOURS[category]
    return f"{start}:00-{end}:00"


def _place_pattern(name: str) -> str:
    # whole name, not a prefix of a longer one ("Bar Rossi" is not "Bar Rossi 12")
    return rf"(?<!\w){re.escape(name)}(?!\w|\s\d)"


def _render(place: PointOfInterest, tenant: str, hours: tuple[str, bool] | None) -> Reference:
    """The answer in ``tenant``'s style with the facts it states; ``hours``: (hours, open now) or None."""
    name, distance = place.name, f"{place.distance_m} m"
    facts = [Fact("place", _place_pattern(name)), Fact("distance", rf"(?<!\d){place.distance_m} m\b")]
    if tenant == "walk":
        minutes, rating = walking_minutes(place.distance_m), f"{place.rating:.1f}"
        article = "an" if str(minutes).startswith("8") or minutes in (11, 18) else "a"  # an 8-, an 11-minute walk
        text = f"{name} is {distance} away, {article} {minutes}-minute walk, rated {rating}."
        facts += [Fact("minutes", rf"(?<!\d){minutes}(-minute| min)"), Fact("rating", rf"(?<![\d.]){re.escape(rating)}(?![\d])")]
    elif tenant == "brief":
        text = f"{name}, {distance}."
    else:
        raise ValueError(f"unknown tenant {tenant!r}; choose one of {TENANTS}")
    if hours is not None:
        span, now = hours
        status = "open now" if now else "closed now"
        text += f" It is {status} (hours {span})." if tenant == "walk" else f" {status.capitalize()}, {span}."
        facts += [Fact("status", rf"\b{status}\b"), Fact("hours", re.escape(span))]
    return Reference(text, tuple(facts))


def reference_answer(kind: str, category: str, place: PointOfInterest, time_of_day: str, tenant: str = DEFAULT_TENANT) -> Reference:
    """The right answer to a request of ``kind`` for ``category`` whose nearest place is ``place``."""
    hours = (hours_text(category), is_open(category, time_of_day)) if kind == "open" else None
    return _render(place, tenant, hours)


def edge_answer(candidate: Candidate, tenant: str | None = None) -> str:
    """What the edge can answer alone from a grounded candidate: the place, its distance, walking
    time and rating in ``tenant``'s style (default :data:`DEFAULT_TENANT`). Complete for
    :data:`LOCAL_KINDS`; for "open" it lacks the hours (a partial answer)."""
    return _render(candidate.place, tenant or DEFAULT_TENANT, None).text


def answer_score(answer: str, reference: Reference) -> float:
    """Share of the reference's facts (place, distance, minutes, rating, status, hours) ``answer`` states."""
    if not reference.facts:
        return 1.0
    return sum(f.found_in(answer) for f in reference.facts) / len(reference.facts)


def names_place(answer: str, place: PointOfInterest) -> bool:
    """Whether ``answer`` names ``place`` (the right place: the nearest of the requested category)."""
    return Fact("place", _place_pattern(place.name)).found_in(answer)


def cloud_prompt(question: str) -> str:
    """How the cloud model is asked to answer a question (a completed prompt, or a cloud-only form)."""
    return f"question: {question}\nanswer:"


def short_question(text: str, time_of_day: str) -> str:
    """The cloud-only question without location: the user's words and the time of day (the cloud's clock)."""
    return f"{text.strip()} (this {time_of_day})"


def context_question(text: str, context: LocationContext) -> str:
    """The cloud-only question with the raw location context, rendered for the model: every place of
    the cell with category, distance and rating, and the user's district, role and preference
    (what :func:`~nm_toolkit.llm.completion_data.cloud_only_payload` ships, less coordinates and ids)."""
    places = "; ".join(f"{p.name} ({p.category}, {p.distance_m} m, {p.rating:.1f})" for p in sorted(context.cell.pois, key=lambda p: p.distance_m))
    return (
        f"{context.cell.district} | {context.time_of_day} | {context.profile.role}, {context.profile.preference}\n"
        f"places: {places}\nrequest: {text.strip()}"
    )


def example_context(store: ContextStore, example: CityQAExample | CompletionExample) -> LocationContext:
    """The location context an example was drawn in."""
    return LocationContext(store.cells[example.cell], example.time_of_day, store.profiles[example.user])


def expected_place(store: ContextStore, example: CityQAExample) -> PointOfInterest:
    """The place the example's request is about: the nearest of its category in its cell."""
    return nearest_by_category(store.cells[example.cell].pois)[example.category]


def example_reference(store: ContextStore, example: CityQAExample, tenant: str | None = None) -> Reference:
    """The reference of ``example`` (in ``tenant``'s style, default its own tenant)."""
    return reference_answer(example.kind, example.category, expected_place(store, example), example.time_of_day, tenant or example.tenant)


def build_city_qa_dataset(
    store: ContextStore, train_size: int, test_size: int, seed: int, open_share: float = 0.4, test_share: float = 0.25
) -> tuple[list[CityQAExample], list[CityQAExample]]:
    """Train and test requests (test: held-out districts and phrasings, as
    :func:`~nm_toolkit.llm.completion_data.build_completion_dataset` splits them), ``open_share``
    of them "open", each with a tenant drawn uniformly from :data:`TENANTS`."""
    train, test = build_completion_dataset(store, train_size, test_size, seed, test_share, open_share)
    rng = random.Random(seed + 1)

    def qa(example: CompletionExample) -> CityQAExample:
        tenant = rng.choice(TENANTS)
        partial = CityQAExample(example.text, example.cell, example.user, example.time_of_day, example.category,
                                example.kind, tenant, example.input, example.target, "")  # fmt: skip
        return replace(partial, answer=example_reference(store, partial).text)

    return [qa(e) for e in train], [qa(e) for e in test]


def cloud_question(example: CityQAExample, form: str, store: ContextStore) -> str:
    """What the cloud is asked for ``example`` in ``form`` (one of :data:`CLOUD_FORMS`), before
    :func:`cloud_prompt` wraps it."""
    if form == "completed":
        return example.completed
    if form == "short":
        return short_question(example.text, example.time_of_day)
    if form == "context":
        return context_question(example.text, example_context(store, example))
    raise ValueError(f"unknown cloud form {form!r}; choose one of {CLOUD_FORMS}")


def edge_pairs(examples: Sequence[CityQAExample]) -> list[tuple[str, str]]:
    """(edge input, completed prompt) pairs for the edge's prompt-completion adapter."""
    return [(e.input, " " + e.completed) for e in examples]


def cloud_pairs(
    examples: Sequence[CityQAExample], store: ContextStore, forms: Sequence[str] = CLOUD_FORMS, renamed: float = 0.0, seed: int = 0
) -> list[tuple[str, str]]:
    """(cloud prompt, reference answer) pairs, one per example and form. In a share ``renamed`` of
    them the example's place gets an invented name (:func:`~nm_toolkit.llm.context.invented_place_name`),
    the same in the question and the answer."""
    rng = random.Random(seed)
    pairs = []
    for e in examples:
        for form in forms:
            prompt, answer = cloud_prompt(cloud_question(e, form, store)), " " + e.answer
            if renamed and rng.random() < renamed:
                name, pattern = invented_place_name(rng), _place_pattern(expected_place(store, e).name)
                prompt, answer = re.sub(pattern, name, prompt), re.sub(pattern, name, answer)
            pairs.append((prompt, answer))
    return pairs


# -- the default cloud model: a LLaMA base and one LoRA adapter per tenant --------------------------

# Bench size (2.3 M parameters): the base pre-trains in about 8 minutes and each adapter (500 steps)
# in about 10 on one CPU core shared with other work (measured 2026-11-26); tests use preset "tiny".
# Copying the place from the completed prompt takes long training: 150 steps at 2e-3 named the
# place in 0 of 60 held-out prompts, 500 steps at 5e-3 with the answer tokens' embeddings trained
# in 27 of 60; with :data:`RENAMED_SHARE` of the names invented, in 100 of 200, and with a copy head
# as well in 180 of 200 (bench/RESULTS.md, session 8).
CLOUD_INIT = InitConfig(arch="llama", preset="edge", steps=200, seed=0)
CLOUD_LORA = LoraTrainConfig(rank=32, alpha=64, epochs=20.0, learning_rate=5e-3, max_length=320, train_target_embeddings=True)
# Share of the cloud's training pairs whose place is renamed. A city's place names recur in its
# requests (every request of a cell names the same nearest pharmacy), so an adapter can learn them
# by heart from the district and category and never learn to read them from its prompt, which is
# all it can do in a district it has not seen. Invented names take that shortcut away.
RENAMED_SHARE = 0.75
# Each tenant adapter gets a copy head (nm_toolkit.llm.copy_head), trained on its pairs after it:
# the small base cannot copy a name it has not seen, the head can (bench/RESULTS.md, session 8).
CLOUD_COPY_HEAD = CopyHeadConfig()


def build_cloud_base(directory: Path, config: InitConfig = CLOUD_INIT) -> bool:
    """Pre-train the cloud's LLaMA base into ``directory`` unless a checkpoint is there; True if built."""
    if (directory / "config.json").is_file():
        return False
    if config.arch != "llama":
        raise ValueError(f"the cloud model is a LLaMA, not {config.arch!r}")
    save_initialised(directory, *initialise_model(config))
    return True


def train_cloud_adapters(
    base_dir: Path,
    registry: AdapterRegistry,
    examples: Sequence[CityQAExample],
    store: ContextStore,
    config: LoraTrainConfig = CLOUD_LORA,
    tenants: Sequence[str] = TENANTS,
    forms: Sequence[str] = NETGPT_FORMS,
    renamed: float = RENAMED_SHARE,
    copy_head: CopyHeadConfig | None = CLOUD_COPY_HEAD,
) -> list[AdapterCard]:
    """One :data:`CITY_QA_TASK` adapter per tenant, named after it, fitted on that tenant's examples
    in each of ``forms`` (the questions the deployment is asked; ``config.epochs`` is divided among
    them, so that every deployment's adapter trains for the same number of steps), a share
    ``renamed`` of them with an invented place name (:func:`cloud_pairs`), and with a copy head
    fitted on the same pairs after it unless ``copy_head`` is None. An adapter whose card records
    the same config and data is kept (re-runs are fast)."""
    cards = []
    config = replace(config, epochs=config.epochs / len(forms))
    for tenant in tenants:
        pairs = cloud_pairs([e for e in examples if e.tenant == tenant], store, forms, renamed)
        fingerprint = json.loads(json.dumps({"lora": asdict(config), "forms": list(forms), "renamed": renamed, "pairs": len(pairs),
                                             "copy_head": asdict(copy_head) if copy_head else None, "first": pairs[0] if pairs else None}))  # fmt: skip
        if (registry.path(tenant) / ADAPTER_CARD).is_file():
            card = registry.card(tenant)
            if card.task == CITY_QA_TASK and card.config == fingerprint:
                cards.append(card)
                continue
        model, tokenizer = load_causal_lm(base_dir)
        tuner = LoraFineTuner(config).fit(model, tokenizer, pairs, tenant)
        card = AdapterCard(tenant, CITY_QA_TASK, str(base_dir), train_examples=len(pairs), train_seconds=round(tuner.seconds_, 1), config=fingerprint)
        fitted = fit_copy_head(tuner.model_, tokenizer, pairs, copy_head) if copy_head is not None else None
        directory = registry.save(tuner.model_, card, tuner.losses_)
        if fitted is not None:
            head, head_losses = fitted
            head.save(directory, copy_head_facts(copy_head, head_losses, len(pairs)))
        cards.append(card)
    return cards
