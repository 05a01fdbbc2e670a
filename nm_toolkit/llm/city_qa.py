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
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from nm_toolkit.llm.completion_data import (
    TIME_OF_DAY_HOURS,
    CompletionExample,
    build_completion_dataset,
    nearest_by_category,
    request_part,
    suggested_by_category,
    walking_minutes,
)
from nm_toolkit.llm.context import ContextStore, LocationContext, PointOfInterest
from nm_toolkit.llm.grounding import Candidate
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import ADAPTER_CARD, AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.offline import load_causal_lm, load_tokenizer

CITY_QA_TASK = "city_qa"
LOCAL_KINDS: frozenset[str] = frozenset({"nearest"})  # kinds the edge answers from its own facts
TENANTS: tuple[str, ...] = ("walk", "brief")
DEFAULT_TENANT = "walk"
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


# What an instruction-tuned cloud model is told before every question (in its chat template).
CLOUD_SYSTEM = "You answer requests about places in Milan in one or two sentences."


def cloud_prompt(question: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """How the cloud model is asked to answer a question (a completed prompt, or a cloud-only form):
    in ``tokenizer``'s chat template when it has one (an instruction-tuned model such as
    SmolLM2-Instruct answers best in the form it was tuned on), else as plain text."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": CLOUD_SYSTEM}, {"role": "user", "content": question}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"question: {question}\nanswer:"


def short_question(text: str, time_of_day: str) -> str:
    """The cloud-only question without location: the user's words and the time of day (the cloud's clock)."""
    return f"{text.strip()} (this {time_of_day})"


def context_question(text: str, context: LocationContext) -> str:
    """The cloud-only question with the raw location context, rendered for the model: every place of
    the cell with category, distance, rating and features, and the user's district, role and
    preference (what :func:`~nm_toolkit.llm.completion_data.cloud_only_payload` ships, less
    coordinates and ids): the cloud must find the place that suits the user itself."""
    places = "; ".join(
        f"{p.name} ({', '.join([p.category, f'{p.distance_m} m', f'{p.rating:.1f}', *p.features])})"
        for p in sorted(context.cell.pois, key=lambda p: p.distance_m)
    )
    return (
        f"{context.cell.district} | {context.time_of_day} | {context.profile.role}, {context.profile.preference}\n"
        f"places: {places}\nrequest: {text.strip()}"
    )


def example_context(store: ContextStore, example: CityQAExample | CompletionExample) -> LocationContext:
    """The location context an example was drawn in."""
    return LocationContext(store.cells[example.cell], example.time_of_day, store.profiles[example.user])


def expected_place(store: ContextStore, example: CityQAExample) -> PointOfInterest:
    """The place the example's request is about: the one of its category in its cell to suggest to
    its user (the nearest that meets the user's need, else the nearest)."""
    return suggested_by_category(store.cells[example.cell].pois, store.profiles[example.user])[example.category]


def personalised(store: ContextStore, example: CityQAExample) -> bool:
    """Whether the user's profile changes the place of ``example`` (it is not the nearest)."""
    return expected_place(store, example) != nearest_by_category(store.cells[example.cell].pois)[example.category]


def personalised_examples(store: ContextStore, count: int, seed: int) -> list[CityQAExample]:
    """``count`` held-out requests (held-out districts and phrasings) whose user's profile changes
    the place, drawn with ``seed``: a few percent of requests are, too few to score on their own."""
    _, drawn = build_city_qa_dataset(store, 0, 40 * count, seed=seed)
    return [e for e in drawn if personalised(store, e)][:count]


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
    """(edge input, request sentence) pairs for the edge's prompt-completion adapter: the part of
    the completed prompt the model writes (:func:`~nm_toolkit.llm.completion_data.request_part`);
    the place sentence after it is grounded, so training on it would only teach names the input
    does not hold."""
    return [(e.input, " " + request_part(e.completed)) for e in examples]


def cloud_pairs(
    examples: Sequence[CityQAExample], store: ContextStore, forms: Sequence[str] = CLOUD_FORMS, tokenizer: PreTrainedTokenizerBase | None = None
) -> list[tuple[str, str]]:
    """(cloud prompt, reference answer) pairs, one per example and form, each prompt in the form
    :func:`cloud_prompt` gives it for ``tokenizer``."""
    return [(cloud_prompt(cloud_question(e, form, store), tokenizer), " " + e.answer) for e in examples for form in forms]


# -- the default cloud model: a LLaMA base and one LoRA adapter per tenant --------------------------

# The from-scratch cloud base (``BuildConfig(pretrained=None)``; tests use preset "tiny").
CLOUD_INIT = InitConfig(arch="llama", preset="edge", steps=200, seed=0)
# Tenant adapters on SmolLM2-135M-Instruct: rank 8 on every projection (the opening hours are
# knowledge, which the MLP projections hold), 40 steps of 8 on 200 completed prompts per tenant.
# Measured here (2026-12-03, 2 threads, about 7 s a step): 40 steps named the place in 32 of 32
# held-out prompts with answer score 0.94; 30 steps on the attention projections only, 0.70 (the
# hours not yet learnt). The base copies place names it has never seen, with no copy head.
CLOUD_LORA = LoraTrainConfig(rank=8, alpha=16, epochs=1.6, batch_size=8, learning_rate=3e-3, max_length=256)


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
) -> list[AdapterCard]:
    """One :data:`CITY_QA_TASK` adapter per tenant, named after it, fitted on that tenant's examples
    in each of ``forms`` (the questions the deployment is asked; ``config.epochs`` is divided among
    them, so that every deployment's adapter trains for the same number of steps), asked as
    :func:`cloud_prompt` asks the base. An adapter whose card records the same base, config and
    data is kept (re-runs are fast)."""
    cards = []
    config = replace(config, epochs=config.epochs / len(forms))
    tokenizer = load_tokenizer(base_dir)
    for tenant in tenants:
        pairs = cloud_pairs([e for e in examples if e.tenant == tenant], store, forms, tokenizer)
        fingerprint = json.loads(json.dumps({"base": base_dir.resolve().name, "lora": asdict(config), "forms": list(forms), "pairs": len(pairs),
                                             "first": pairs[0] if pairs else None}))  # fmt: skip
        if (registry.path(tenant) / ADAPTER_CARD).is_file():
            card = registry.card(tenant)
            if card.task == CITY_QA_TASK and card.config == fingerprint:
                cards.append(card)
                continue
        model, tokenizer = load_causal_lm(base_dir)
        tuner = LoraFineTuner(config).fit(model, tokenizer, pairs, tenant)
        card = AdapterCard(tenant, CITY_QA_TASK, base_dir.resolve().name, train_examples=len(pairs), train_seconds=round(tuner.seconds_, 1), config=fingerprint)
        registry.save(tuner.model_, card, tuner.losses_)
        cards.append(card)
    return cards
