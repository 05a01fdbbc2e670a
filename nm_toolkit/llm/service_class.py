"""A prompt's service class from the edge model's own output: a constrained field next to its completion.

NetGPT's edge model infers what users want as a by-product of serving them, and that drives the
network's popularity prediction (``demand.<class>.*`` series). Keyword rules
(:func:`intent.user.service_class`) read words, not requests: "download the new game" is a bulk
download, not gaming; "watch the match" is video. Here the edge model writes the class as a
structured field, constrained to the allowed labels: every label (:data:`LABELS`) is scored as the
continuation of :func:`classifier_input` (the user's words and the keyword rules' reading of them,
which the model learns to follow or overrule) under the ``service_class`` LoRA adapter on the edge base,
all labels of a batch in one pass over a shared KV cache
(:meth:`~nm_toolkit.llm.generation.AdapterLM.shared_prefix_logprobs`), and the softmax over their
scores is the model's confidence. Below ``min_confidence``, or when the adapter is not loaded, the
keyword rules decide (the fallback), and each result says which did.

The adapter is trained on :func:`labelled_prompts`, synthetic requests whose class is known by
construction: activities per class, phrasing frames, and compositions that keyword rules get wrong
("upload a video", "watch the game"), plus the city task's place requests (web lookups) and
requests that imply no network service at all (``None``: needs clarification). Activities and
frames are split in two disjoint sets, so the held-out set measures unseen words and phrasings.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from intent.schema import ServiceClass
from intent.user import service_class as keyword_service_class
from nm_toolkit.llm.completion_data import OPEN_TEST_FRAMES, OPEN_TRAIN_FRAMES, TEST_FRAMES, TRAIN_FRAMES
from nm_toolkit.llm.context import POI_CATEGORIES
from nm_toolkit.llm.generation import AdapterLM
from nm_toolkit.llm.grounding import softmax
from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig
from nm_toolkit.llm.offline import load_causal_lm

SERVICE_CLASS_TASK = "service_class"
SERVICE_CLASS_ADAPTER = "service_class"
Split = Literal["train", "held_out"]
MAX_INPUT_CHARS = 400  # of the user's words the model reads: the rest would not fit an edge model's positions
ClassSource = Literal["edge_model", "keywords"]

# The words the model writes for each class (None: no network service implied); short, distinct, and
# ending in a period so that every label is scored to its end.
LABELS: dict[ServiceClass | None, str] = {
    "video": " video.", "gaming": " gaming.", "ar_vr": " virtual reality.", "voice": " voice call.",
    "bulk_download": " file transfer.", "web": " web.", None: " none.",
}  # fmt: skip

# Activities per class: [train, held out]. Held-out ones use words the training set never shows.
_ACTIVITIES: dict[ServiceClass | None, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "video": (
        ("watch the match live", "stream a movie", "watch youtube videos", "binge a series on netflix",
         "watch the news channel", "watch a concert stream in 4k", "see the highlights of the race", "watch the game tonight"),
        ("catch the derby on tv", "see the new episode of my show", "put on a film for the kids", "watch twitch",
         "follow the live broadcast of the grand prix", "stream the cup final", "watch a documentary"),
    ),
    "gaming": (
        ("play fortnite online", "join a multiplayer match", "play games with friends", "play a ranked esports match",
         "play call of duty", "start a steam game online", "play online poker with a low ping"),
        ("grind some ranked games in valorant", "raid with my guild tonight", "play minecraft on a server",
         "start a cloud gaming session", "play chess online", "queue for a league of legends match"),
    ),
    "ar_vr": (
        ("use my vr headset", "take an augmented reality tour", "join the metaverse concert", "attend a hologram meeting",
         "play a virtual reality game", "watch a vr movie"),
        ("try the oculus app", "do mixed reality training", "explore the museum in a vr tour",
         "put on the headset and explore", "see the furniture in my room with ar", "stream a 360 video to my headset"),
    ),
    "voice": (
        ("make a voip call", "call my mother", "have a whatsapp call with the team", "phone the office",
         "make a video call with grandma", "join the conference call"),
        ("ring my dad", "talk to my boss on teams", "dial into the standup call", "call the doctor",
         "make a skype call to my sister", "hold a voice meeting with the client"),
    ),
    "bulk_download": (
        ("download a large file", "back up my photos", "sync my cloud drive", "update my laptop", "upload the dataset",
         "download a movie for the flight", "upload a video to youtube", "download the new game"),
        ("grab the new os image", "transfer the project archive", "install the game update", "copy my files to the cloud",
         "download the whole season to watch offline", "upload my vr recordings"),
    ),
    "web": (
        ("browse the news", "search for recipes", "check my email", "read the map", "look at the web page of the museum",
         "find a bus timetable online"),
        ("look up the weather", "read a blog post", "do some online shopping", "search the train times",
         "scroll through the forum", "read the news about the game"),
    ),
    None: (
        ("hello", "thanks a lot", "what is your name", "tell me a joke", "good morning", "how are you"),
        ("nice to meet you", "who made you", "that was helpful", "sing me a song"),
    ),
}  # fmt: skip

_FRAMES: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("I want to {a}", "{a} please", "can I {a} here?", "help me {a}", "I need to {a} now", "{a}", "let me {a}",
     "could you help me {a}", "trying to {a}", "I'd like to {a} later", "want to {a} on my phone", "{a} from home",
     "we will {a} this evening", "is it possible to {a}?", "my kids want to {a}", "time to {a}", "{a} right now",
     "will the signal let me {a}?", "I am on the train and want to {a}", "quickly {a}"),
    ("is the network good enough to {a}?", "about to {a}", "planning to {a} tonight", "how fast can I {a}?", "going to {a} soon"),
)
_BARE_FRAMES: tuple[tuple[str, ...], tuple[str, ...]] = (("{a}", "{a}!"), ("{a}?", "well, {a}"))  # for greetings


@dataclass(frozen=True)
class ServiceClassChoice:
    """The class of one prompt, who decided it, and the model's confidence (None: no model ran)."""

    service_class: ServiceClass | None
    source: ClassSource
    confidence: float | None = None
    model_class: ServiceClass | None = None  # what the model said, also when the keywords decided


def classifier_input(text: str) -> str:
    """What the edge model reads before it writes the class: the user's words (no location) and the
    keyword rules' reading of them, which the model learns to follow or overrule."""
    rules = keyword_service_class(text)
    words = " ".join(text.split())[:MAX_INPUT_CHARS]
    return f"user request: {words}\nkeywords say:{LABELS[rules]}\nservice class:"


def labelled_prompts(count: int, split: Split = "train", seed: int = 0) -> list[tuple[str, ServiceClass | None]]:
    """``count`` (request, class) pairs of ``split``, the classes in turn; place requests of the city
    task are web lookups. Train and held-out pairs share no activity and no frame."""
    rng = random.Random(f"{seed}-{split}")
    side = 0 if split == "train" else 1
    place_frames = (TRAIN_FRAMES + OPEN_TRAIN_FRAMES) if side == 0 else (TEST_FRAMES + OPEN_TEST_FRAMES)
    nouns = [noun for words in POI_CATEGORIES.values() for noun in words]
    turns: list[ServiceClass | None | Literal["place"]] = [*_ACTIVITIES, "place"]  # the classes in turn, then a place request
    out: list[tuple[str, ServiceClass | None]] = []
    for i in range(count):
        kind = turns[i % len(turns)]
        if kind == "place":
            out.append((rng.choice(place_frames).format(noun=rng.choice(nouns)), "web"))
            continue
        frames = _BARE_FRAMES[side] if kind is None else _FRAMES[side]
        out.append((rng.choice(frames).format(a=rng.choice(_ACTIVITIES[kind][side])), kind))
    return out


def read_labelled(path: Path) -> list[tuple[str, ServiceClass | None]]:
    """(request, class) pairs of a JSON-lines file of ``{"text": ..., "service_class": ... | null}``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(str(r["text"]), r["service_class"]) for r in rows]


def training_pairs(examples: Sequence[tuple[str, ServiceClass | None]]) -> list[tuple[str, str]]:
    """(model input, label words) pairs for the adapter."""
    return [(classifier_input(text), LABELS[kind]) for text, kind in examples]


class ServiceClassifier:
    """The service class of prompts from the edge model's constrained output, keyword rules as the fallback.

    ``min_confidence``: below it the keyword rules decide (when they find a class; else the model's
    answer stands). ``adapter``: the class adapter's name in ``lm`` (not loaded: keywords only).
    """

    def __init__(self, lm: AdapterLM | None, adapter: str = SERVICE_CLASS_ADAPTER, min_confidence: float = 0.8) -> None:
        self.lm = lm
        self.adapter = adapter
        self.min_confidence = min_confidence

    @property
    def uses_model(self) -> bool:
        return self.lm is not None and self.adapter in self.lm.cards

    def classify(self, texts: Sequence[str]) -> list[ServiceClassChoice]:
        """One choice per text, all texts in one batched pass of the model."""
        if not texts:
            return []
        if not self.uses_model:
            return [ServiceClassChoice(keyword_service_class(t), "keywords") for t in texts]
        assert self.lm is not None
        labels = list(LABELS)
        words = [LABELS[k] for k in labels]
        scored = self.lm.shared_prefix_logprobs([classifier_input(t) for t in texts], [words] * len(texts), [self.adapter] * len(texts))
        out = []
        for text, rows in zip(texts, scored, strict=True):
            probabilities = softmax([sum(lp) for lp in rows])
            best = max(range(len(labels)), key=probabilities.__getitem__)
            said, confidence = labels[best], probabilities[best]
            if confidence < self.min_confidence and (fallback := keyword_service_class(text)) is not None:
                out.append(ServiceClassChoice(fallback, "keywords", confidence, said))
            else:
                out.append(ServiceClassChoice(said, "edge_model", confidence, said))
        return out


def train_service_class_adapter(
    edge_dir: Path, registry: AdapterRegistry, config: LoraTrainConfig, examples: int, seed: int = 0, card_config: dict[str, object] | None = None
) -> AdapterCard:
    """Fit the ``service_class`` adapter on ``examples`` training prompts on the edge base at
    ``edge_dir`` and save it in ``registry`` (``card_config``: what its card records as its config)."""
    pairs = training_pairs(labelled_prompts(examples, "train", seed))
    model, tokenizer = load_causal_lm(edge_dir)
    tuner = LoraFineTuner(config).fit(model, tokenizer, pairs, SERVICE_CLASS_ADAPTER)
    card = AdapterCard(
        SERVICE_CLASS_ADAPTER, SERVICE_CLASS_TASK, edge_dir.resolve().name, train_examples=len(pairs), train_seconds=round(tuner.seconds_, 1),
        config=card_config if card_config is not None else {"examples": examples, "seed": seed},
    )  # fmt: skip
    registry.save(tuner.model_, card, tuner.losses_)
    return card


@dataclass(frozen=True)
class ClassifierReport:
    """Accuracy on labelled prompts of the keyword rules, the edge model alone, and the two combined."""

    examples: int
    keywords: float
    model: float
    combined: float
    keywords_unclassified: float  # share the keyword rules find no class for (needs clarification)
    model_decided: float  # share the combined classifier took from the model
    ms_per_prompt: float


def evaluate_classifier(classifier: ServiceClassifier, examples: Sequence[tuple[str, ServiceClass | None]], batch_size: int = 32) -> ClassifierReport:
    """Score ``classifier`` and the keyword rules on ``examples`` (accuracy over every class, ``None`` included)."""
    texts = [t for t, _ in examples]
    truth = [k for _, k in examples]
    started = time.perf_counter()
    choices = [c for i in range(0, len(texts), batch_size) for c in classifier.classify(texts[i : i + batch_size])]
    elapsed = time.perf_counter() - started
    keywords = [keyword_service_class(t) for t in texts]
    n = max(1, len(examples))
    return ClassifierReport(
        examples=len(examples),
        keywords=sum(k == t for k, t in zip(keywords, truth, strict=True)) / n,
        model=sum(c.model_class == t for c, t in zip(choices, truth, strict=True)) / n if classifier.uses_model else 0.0,
        combined=sum(c.service_class == t for c, t in zip(choices, truth, strict=True)) / n,
        keywords_unclassified=sum(k is None for k in keywords) / n,
        model_decided=sum(c.source == "edge_model" for c in choices) / n,
        ms_per_prompt=1000 * elapsed / n,
    )
