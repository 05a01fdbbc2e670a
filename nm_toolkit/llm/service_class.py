"""A prompt's service class from the edge model's own reading of it: a probe on its hidden states.

NetGPT's edge model infers what users want as a by-product of serving them, and that drives the
network's popularity prediction (``demand.<class>.*`` series). Keyword rules
(:func:`intent.user.service_class`) read words, not requests: "download the new game" is a bulk
download, not gaming; "watch the match" is video. Here the edge model reads the request
(:func:`classifier_input`: the user's words, never the location) and a linear probe on its hidden
states (:class:`ServiceClassProbe`: multinomial logistic regression on the mean of one layer's
states over the request's tokens) gives the probability of every class (:data:`CLASSES`); the
largest is the model's class and its confidence. Below ``min_confidence``, or without a probe, the
keyword rules decide (the fallback), and each result says which did.

Why a probe and not a LoRA adapter that writes the label: a pretrained model's states already
separate "call grandma on facetime" from "watch the game" for words the training set never holds,
and a probe keeps that knowledge, where a LoRA adapter tuned on a few hundred template requests
learns the templates. Measured on SmolLM2-135M-Instruct (bench/RESULTS.md, issue 22): held-out
accuracy 0.86 for the probe on layer 22 against 0.70 for a LoRA label scorer (40 steps), and 0.68
against 0.60 on everyday requests written apart from the training data. It also fits in one
forward pass over the training requests, no backward pass.

The probe is fitted on :func:`labelled_prompts`, synthetic requests whose class is known by
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from peft import PeftModel

from intent.schema import ServiceClass
from intent.user import service_class as keyword_service_class
from nm_toolkit.llm.completion_data import OPEN_TEST_FRAMES, OPEN_TRAIN_FRAMES, TEST_FRAMES, TRAIN_FRAMES
from nm_toolkit.llm.context import POI_CATEGORIES
from nm_toolkit.errors import UserError
from nm_toolkit.llm.generation import BASE, AdapterLM

Split = Literal["train", "held_out"]
MAX_INPUT_CHARS = 400  # of the user's words the model reads: the rest would not fit an edge model's positions
ClassSource = Literal["edge_model", "keywords"]

# Every class a request can have (None: no network service implied, needs clarification).
CLASSES: tuple[ServiceClass | None, ...] = ("video", "gaming", "ar_vr", "voice", "bulk_download", "web", None)
PROBE_FILE = "service_class_probe.json"  # in the edge's adapters directory, next to its LoRA adapters

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
    """What the edge model reads to classify a request: the user's words, never the location."""
    words = " ".join(text.split())[:MAX_INPUT_CHARS]
    return f"user request: {words}"


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


@dataclass(frozen=True)
class ProbeConfig:
    """Which layer's states the probe reads, its regularisation, and on how many requests it is fitted."""

    layer: int = 22
    C: float = 0.1  # inverse L2 strength of the logistic regression
    examples: int = 1000
    seed: int = 0
    batch_size: int = 32


@torch.no_grad()
def request_states(lm: AdapterLM, texts: Sequence[str], layer: int, batch_size: int = 32) -> np.ndarray:
    """The mean of layer ``layer``'s hidden states over each request's tokens, under the base model
    (no adapter): one row per text."""
    rows = []
    padding_side = lm.tokenizer.padding_side
    lm.tokenizer.padding_side = "right"
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [classifier_input(t) for t in texts[start : start + batch_size]]
            batch = lm.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            extra = {"adapter_names": [BASE] * len(chunk)} if isinstance(lm.model, PeftModel) else {}
            states = lm.model(**batch, output_hidden_states=True, **extra).hidden_states
            if not 0 <= layer < len(states):
                raise UserError(f"the service-class probe reads layer {layer}, but the edge model has {len(states) - 1}: refit it with `nmt llm build`")
            mask = batch["attention_mask"][..., None].float()
            rows.append(((states[layer].float() * mask).sum(1) / mask.sum(1)).numpy())
    finally:
        lm.tokenizer.padding_side = padding_side
    return np.concatenate(rows) if rows else np.zeros((0, 0))


@dataclass
class ServiceClassProbe:
    """Multinomial logistic regression from the edge model's request states to :data:`CLASSES`."""

    layer: int
    coef: np.ndarray  # (classes, hidden)
    intercept: np.ndarray  # (classes,)
    facts: dict[str, object] = field(default_factory=dict)  # how it was fitted (its card)

    @classmethod
    def fit(cls, lm: AdapterLM, examples: Sequence[tuple[str, ServiceClass | None]], config: ProbeConfig = ProbeConfig()) -> ServiceClassProbe:
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        layer = min(config.layer, lm.model.config.num_hidden_layers)  # a small model has fewer layers
        states = request_states(lm, [t for t, _ in examples], layer, config.batch_size)
        labels = [CLASSES.index(k) for _, k in examples]
        model = LogisticRegression(C=config.C, max_iter=2000).fit(states, labels)
        coef, intercept = np.zeros((len(CLASSES), states.shape[1])), np.full(len(CLASSES), -1e9)
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_  # a class absent from training is never chosen
        facts = {"config": asdict(config), "layer": layer, "examples": len(examples), "train_accuracy": round(float(model.score(states, labels)), 4),
                 "fit_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        return cls(layer, coef, intercept, facts)

    def probabilities(self, lm: AdapterLM, texts: Sequence[str]) -> np.ndarray:
        """(texts, classes) probabilities, in the order of :data:`CLASSES`."""
        logits = request_states(lm, texts, self.layer) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PROBE_FILE
        path.write_text(json.dumps({"classes": list(CLASSES), "layer": self.layer, "coef": self.coef.round(6).tolist(),
                                    "intercept": self.intercept.tolist(), "facts": self.facts}))  # fmt: skip
        return path

    @classmethod
    def load(cls, directory: Path) -> ServiceClassProbe | None:
        """The probe saved in ``directory`` (None: there is none)."""
        path = directory / PROBE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if tuple(data["classes"]) != CLASSES:
            raise UserError(f"{path} classifies into {data['classes']}, not {list(CLASSES)}: refit it with `nmt llm build`")
        return cls(data["layer"], np.array(data["coef"]), np.array(data["intercept"]), data.get("facts", {}))


class ServiceClassifier:
    """The service class of prompts from the edge model's states, keyword rules as the fallback.

    ``min_confidence``: below it the keyword rules decide (when they find a class; else the model's
    answer stands). Without ``lm`` or ``probe``: keywords only.
    """

    def __init__(self, lm: AdapterLM | None, probe: ServiceClassProbe | None = None, min_confidence: float = 0.8) -> None:
        self.lm = lm
        self.probe = probe
        self.min_confidence = min_confidence

    @property
    def uses_model(self) -> bool:
        return self.lm is not None and self.probe is not None

    def classify(self, texts: Sequence[str]) -> list[ServiceClassChoice]:
        """One choice per text, all texts in batched passes of the model."""
        if not texts:
            return []
        if self.lm is None or self.probe is None:
            return [ServiceClassChoice(keyword_service_class(t), "keywords") for t in texts]
        out = []
        for text, row in zip(texts, self.probe.probabilities(self.lm, texts), strict=True):
            best = int(row.argmax())
            said, confidence = CLASSES[best], float(row[best])
            if confidence < self.min_confidence and (fallback := keyword_service_class(text)) is not None:
                out.append(ServiceClassChoice(fallback, "keywords", confidence, said))
            else:
                out.append(ServiceClassChoice(said, "edge_model", confidence, said))
        return out


def fit_service_class_probe(edge_dir: Path, directory: Path, config: ProbeConfig = ProbeConfig(), fingerprint: dict[str, object] | None = None) -> ServiceClassProbe:
    """Fit the probe on ``config.examples`` training prompts on the edge base at ``edge_dir`` and save
    it in ``directory`` (``fingerprint``: what its card records as the build's configuration)."""
    probe = ServiceClassProbe.fit(AdapterLM.load(edge_dir), labelled_prompts(config.examples, "train", config.seed), config)
    probe.facts["base"] = edge_dir.resolve().name
    if fingerprint is not None:
        probe.facts["fingerprint"] = fingerprint
    probe.save(directory)
    return probe


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
