"""User service intents from prompts: what service, how much bandwidth and latency, where, when.

A prompt can only ever express demand. The location is the one the record carries (the cell the
user is in), not any place the text names, and nothing here produces an operator intent: a prompt
that asks to block traffic or act for another tenant yields at most a demand, or a clarification.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from intent.schema import NeedsClarification, ServiceClass, UserServiceIntent
from intent.structure import normalise_hour
from nm_toolkit.errors import validation_reason

# Typical needs per class (Mbit/s, one-way ms), after ITU-T G.1010 / 3GPP TS 22.261 orders of magnitude.
SERVICE_NEEDS: dict[str, tuple[float, float]] = {
    "video": (8.0, 150.0), "gaming": (5.0, 30.0), "ar_vr": (50.0, 10.0),
    "voice": (0.1, 100.0), "bulk_download": (50.0, 2000.0), "web": (2.0, 300.0),
}
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "ar_vr": ("vr", "ar", "virtual reality", "augmented reality", "metaverse", "headset", "hologram", "xr"),
    "gaming": ("game", "games", "gaming", "play online", "multiplayer", "esports", "fortnite", "steam"),
    "voice": ("call", "calls", "voice", "voip", "phone", "skype call", "whatsapp call"),
    "video": ("video", "stream", "streaming", "watch", "movie", "netflix", "youtube", "live match", "tv", "4k"),
    "bulk_download": ("download", "backup", "upload", "sync", "update", "large file", "torrent"),
    "web": ("browse", "web", "search", "email", "news", "map", "maps"),
}
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(k|m|g)b(?:it)?(?:ps|/s)", re.IGNORECASE)
_LATENCY = re.compile(r"(\d+(?:\.\d+)?)\s*ms\b", re.IGNORECASE)
_WINDOW = re.compile(r"\bfrom\s+([0-9:apm ]+?)\s+(?:to|until|till)\s+([0-9:apm]+|midnight|noon)", re.IGNORECASE)
_FACTOR = {"k": 1e-3, "m": 1.0, "g": 1e3}


def service_class(text: str) -> ServiceClass | None:
    """The first class (most demanding first) whose keywords the prompt contains."""
    lowered = f" {' '.join(re.findall(r'[a-z0-9]+', text.lower()))} "
    for kind, words in _KEYWORDS.items():
        if any(f" {w} " in lowered for w in words):
            return kind  # type: ignore[return-value]
    return None


def infer_user_intent(request_id: str, text: str, location: str | None) -> UserServiceIntent | NeedsClarification:
    """The service intent of one prompt by the keyword rules, or the reason none can be inferred."""
    return user_intent(request_id, text, location, service_class(text))


def user_intent(request_id: str, text: str, location: str | None, kind: ServiceClass | None) -> UserServiceIntent | NeedsClarification:
    """The service intent of one prompt of class ``kind`` (from the keyword rules or the edge model's
    own output, :mod:`nm_toolkit.llm.service_class`): the class's typical needs unless the prompt
    states a rate, a delay or a time window; None: the reason none can be inferred."""
    if kind is None:
        return NeedsClarification(text=text[:2000], reason="no service recognised (video, gaming, AR/VR, voice, download, web)", source="user", request_id=request_id)
    bandwidth, latency = SERVICE_NEEDS[kind]
    if rate := _RATE.search(text):
        bandwidth = float(rate.group(1)) * _FACTOR[rate.group(2).lower()]
    if delay := _LATENCY.search(text):
        latency = float(delay.group(1))
    start = end = None
    if window := _WINDOW.search(text):
        start, end = normalise_hour(window.group(1)), normalise_hour(window.group(2))
        if start is None or end is None:
            start = end = None
    try:
        return UserServiceIntent(request_id=request_id, text=text[:2000], service_class=kind, bandwidth_mbps=bandwidth,
                                 latency_ms=latency, location=location, start=start, end=end)
    except ValidationError as exc:
        return NeedsClarification(text=text[:2000], reason=validation_reason(exc, limit=1), source="user", request_id=request_id)
