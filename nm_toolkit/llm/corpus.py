"""The domain corpus the toolkit pre-trains its own tokenizer and models on.

No pretrained weights can be downloaded, so ``nmt model init`` learns the domain's language from
text the toolkit can produce itself: short user prompts, operator intents (the Nile/Lumi set when
given, plus templated ones), serialised telemetry (the Milan CDR series when given, else
synthetic) each followed by its one-line reading, edge location context each followed by the
edge's summary of it, and sentences of network vocabulary. The readings and summaries restate
values that appear earlier in the same document: that is what teaches a small model to look
things up in its context (induction), which prompt completion later relies on.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nm_toolkit.errors import UserError
from nm_toolkit.llm.completion_data import TIMES_OF_DAY, TRAIN_FRAMES, edge_input, places_text, suggested_by_category
from nm_toolkit.llm.context import POI_CATEGORIES, LocationContext, synthetic_city

_NETWORK_TERMS = (
    ("latency", "the time a packet takes from source to destination, measured in milliseconds"),
    ("jitter", "the variation of latency between consecutive packets"),
    ("throughput", "the rate of data delivered over a link, in bits per second"),
    ("packet loss", "the share of packets that never reach their destination"),
    ("PRB utilisation", "the share of physical resource blocks a cell schedules"),
    ("handover", "moving a user's connection from one cell to another"),
    ("QoS", "quality of service: rules that give some traffic priority over other traffic"),
    ("SDN controller", "the component that programs the forwarding tables of switches"),
    ("OpenFlow", "the protocol an SDN controller uses to install flow rules in switches"),
    ("network slice", "an isolated logical network with its own guarantees on shared hardware"),
    ("edge server", "compute placed near the base stations, close to the users"),
    ("LoRA adapter", "a small low-rank update that personalises a language model"),
    ("bandwidth reservation", "capacity set aside ahead of time for a forecast load"),
    ("rate limit", "an upper bound on the traffic a flow or user may send"),
    ("call detail record", "a log entry of a call, SMS or data session on a cell"),
)
_NETWORK_COMPLAINTS = (
    "my video keeps buffering", "internet is slow", "calls keep dropping", "no signal here",
    "upload is stuck", "the game lags a lot", "web pages load slowly", "mobile data stopped working",
)
_INTENT_TEMPLATES = (
    "{op} {traffic} for {target} {when}", "limit {traffic} to {value} {unit} for {target}",
    "please {op} {traffic} from {target}", "make sure {traffic} gets at least {value} {unit} {when}",
    "reserve {value} {unit} for {traffic} in {target} {when}",
)
_INTENT_SLOTS = {
    "op": ("block", "allow", "prioritise", "throttle", "add firewall for", "remove DPI on"),
    "traffic": ("video traffic", "torrent traffic", "voice calls", "gaming traffic", "all traffic", "backup traffic"),
    "target": ("students", "guests", "the dorms", "the lab", "cell sites in Brera", "the DMZ", "staff"),
    "when": ("from 6pm to 11pm", "during peak hours", "until tomorrow", "starting at 8am", "every weekend", ""),
    "value": ("10", "50", "100", "200", "1"),
    "unit": ("mbps", "gbps", "kbps"),
}


@dataclass(frozen=True)
class CorpusConfig:
    """How much of each kind of text the corpus holds; ``seed`` makes it reproducible."""

    seed: int = 0
    user_prompts: int = 800
    intents: int = 600
    telemetry: int = 600
    contexts: int = 2400
    vocabulary_repeats: int = 4

    def scaled(self, factor: float) -> CorpusConfig:
        """Every generated kind ``factor`` times as large: long pre-training (on a GPU) needs more
        distinct documents, or the model memorises the corpus instead of learning to look things up."""
        if factor <= 0:
            raise UserError(f"corpus scale must be positive, got {factor}")
        counts = ("user_prompts", "intents", "telemetry", "contexts", "vocabulary_repeats")
        return replace(self, **{name: max(1, round(getattr(self, name) * factor)) for name in counts})


def load_nile_intents(path: Path) -> list[str]:
    """Intent texts of a Nile/Lumi-format file (``{"intents": [{"text": ...}]}``)."""
    try:
        data = json.loads(path.read_text())
        return [str(item["text"]) for item in data["intents"]]
    except FileNotFoundError as exc:
        raise UserError(f"no intents file at {path}: pass a Nile-format JSON file or leave --intents out") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a Nile intents file ({exc}): expected {{'intents': [{{'text': ...}}]}}") from exc


def cdr_telemetry_lines(path: Path, count: int, rng: random.Random) -> list[str]:
    """Telemetry records serialised as the collectors see them, sampled from a wide CDR CSV."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise UserError(f"cannot read CDR file {path} ({exc}): pass a wide CSV of hourly counts") from exc
    if len(rows) < 2 or len(rows[0]) < 2:
        raise UserError(f"{path} is not a wide CDR CSV: expected a 'timestamp' column and one column per cell")
    header, body = rows[0], rows[1:]
    lines = []
    for _ in range(count):
        row, column = rng.choice(body), rng.randrange(1, len(header))
        lines.append(_telemetry_json(row[0].replace(" ", "T") + "Z", f"cell-{header[column]}", "cdr_activity", float(row[column])))
    return lines


def _telemetry_json(ts: str, source: str, metric: str, value: float) -> str:
    """A record as collectors see it, then how an operator reads it."""
    record = json.dumps({"ts": ts, "source": source, "metric": metric, "value": round(value, 2)})
    return f"{record}\nreading: {source} reported {metric} = {round(value, 2)} at {ts}"


def _synthetic_telemetry(count: int, rng: random.Random) -> list[str]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    metrics = (("prb_utilisation", 100.0), ("throughput_mbps", 800.0), ("latency_ms", 80.0), ("active_users", 400.0))
    lines = []
    for _ in range(count):
        metric, scale = rng.choice(metrics)
        ts = (start + timedelta(hours=rng.randrange(24 * 60))).isoformat().replace("+00:00", "Z")
        lines.append(_telemetry_json(ts, f"cell-{rng.randrange(1, 2000)}", metric, rng.random() * scale))
    return lines


def _fill(template: str, rng: random.Random) -> str:
    return " ".join(template.format(**{k: rng.choice(v) for k, v in _INTENT_SLOTS.items()}).split())


def build_corpus(config: CorpusConfig, intents_file: Path | None = None, cdr_file: Path | None = None) -> list[str]:
    """The corpus as a list of documents, shuffled with ``config.seed``."""
    rng = random.Random(config.seed)
    docs: list[str] = []
    nouns = [noun for words in POI_CATEGORIES.values() for noun in words]
    for _ in range(config.user_prompts):
        if rng.random() < 0.8:
            docs.append(rng.choice(TRAIN_FRAMES).format(noun=rng.choice(nouns)))
        else:
            docs.append(rng.choice(_NETWORK_COMPLAINTS))
    nile = load_nile_intents(intents_file) if intents_file else []
    docs += nile
    docs += [_fill(rng.choice(_INTENT_TEMPLATES), rng) for _ in range(config.intents)]
    docs += cdr_telemetry_lines(cdr_file, config.telemetry, rng) if cdr_file else _synthetic_telemetry(config.telemetry, rng)
    docs += list(_context_documents(config, rng))
    docs += [f"{term}: {meaning}." for term, meaning in _NETWORK_TERMS] * config.vocabulary_repeats
    rng.shuffle(docs)
    return docs


def _context_documents(config: CorpusConfig, rng: random.Random) -> Iterator[str]:
    """Edge context, then a summary, from many small cities drawn with the corpus seed (never the
    fine-tuning city): a cell appears about once, so the summary can only be written by looking
    its values up in the context, not by remembering them."""
    cities = [synthetic_city(seed=config.seed + 10_000 + i, districts=30, cells_per_district=1, users=30) for i in range(max(1, config.contexts // 30))]
    for _ in range(config.contexts):
        city = rng.choice(cities)
        context = LocationContext(rng.choice(list(city.cells.values())), rng.choice(TIMES_OF_DAY), rng.choice(list(city.profiles.values())))
        category = rng.choice(list(POI_CATEGORIES))
        text = rng.choice(TRAIN_FRAMES).format(noun=rng.choice(POI_CATEGORIES[category]))
        poi = suggested_by_category(context.cell.pois, context.profile)[category]
        yield (
            edge_input(text, context).rsplit("\nprompt:", 1)[0]
            + f"\nplaces: {places_text(context)}\nsummary: {context.profile.role} ({context.profile.preference}) at cell {context.cell.cell} in "
            f"{context.cell.district}, {context.time_of_day}; wants {category}; suggested: {poi.name} at {poi.distance_m} m"
        )

