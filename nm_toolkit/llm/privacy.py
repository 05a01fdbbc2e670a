"""The privacy guardrail on edge-to-cloud traffic: what may leave the edge, checked by content.

NetGPT's split only protects users if the completed prompt really leaves the location context
behind. :class:`EgressPolicy` declares which fields a cloud-bound record may carry and which kinds
of context value must never appear in any of them; :func:`check_egress` enforces it on a record
by content, against the forms of those values the context store knows (cell ids in any case and
spacing, coordinates of the cell and its places at every precision that identifies a location,
the user id, the profile's role and preference); :func:`redact` rewrites a text instead.

Which to use: a service that publishes to a cloud topic calls :func:`check_egress` (or
:func:`check_message` on the encoded bytes) on every message and refuses one with violations
(dead-letter it with the reasons, which never quote the denied values); an edge service that would
rather answer with less context than not at all runs :func:`redact` on the text first and still
checks the record it builds, since redaction cannot remove a field that is not allowed.

Pure: no I/O and no model imports; the matcher of a context is compiled once and cached.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property, lru_cache

from nm_toolkit.llm.context import Cell, LocationContext, UserProfile

#: Fields of a cloud-bound request record that may leave the edge by default.
DEFAULT_ALLOWED_FIELDS: frozenset[str] = frozenset(
    {"request_id", "text", "service_class", "deadline_ms", "tenant",
     # the transport's own fields (nm_toolkit.llm.messages.CloudRequest): the message kind, the edge
     # site that sent it (the cloud sees where a connection comes from anyway), timing, probe bytes
     "kind", "edge", "edge_sent_ms", "arrived_ms", "padding"}
)  # fmt: skip

#: Kinds of denied term, by the regex group that finds them, with the words a reason uses.
KINDS: dict[str, str] = {
    "cell_id": "cell id",
    "user_id": "user id",
    "coordinate": "coordinate",
    "preference": "profile preference",
    "role": "profile role",
    "district": "district name",
    "place": "place name",
}

# The user id ContextStore.context gives a request without a user: it names nobody.
_ANONYMOUS = "anonymous"
_MAX_DEPTH = 32
_NAME_LIMIT = 48


@dataclass(frozen=True)
class EgressPolicy:
    """What may leave the edge in a cloud-bound record.

    ``allowed_fields`` is the allow-list of the record's top-level fields; any other field is a
    violation whatever it holds. Every allowed field is then searched, strings, numbers and nested
    values alike, for the denied context values: cell ids, coordinates (decimal degrees that agree
    with a cell's or a place's to ``coordinate_decimals`` decimals or more, with a dot or a comma,
    and degrees-minutes-seconds to the second), user ids and the profile's role and preference.
    District and place names are allowed unless ``deny_districts`` / ``deny_place_names`` say
    otherwise: the completed prompt names the place it recommends.
    """

    allowed_fields: frozenset[str] = DEFAULT_ALLOWED_FIELDS
    deny_cell_ids: bool = True
    deny_coordinates: bool = True
    coordinate_decimals: int = 3
    deny_user_ids: bool = True
    deny_profile: bool = True
    deny_districts: bool = False
    deny_place_names: bool = False

    def __post_init__(self) -> None:
        fields = self.allowed_fields
        if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
            raise ValueError("allowed_fields must be a collection of field names")
        object.__setattr__(self, "allowed_fields", frozenset(fields))
        if not 1 <= self.coordinate_decimals <= 8:
            raise ValueError(f"coordinate_decimals must be 1-8, not {self.coordinate_decimals}")


DEFAULT_POLICY = EgressPolicy()


@dataclass(frozen=True)
class Finding:
    """One denied term found in a text: its kind (see :data:`KINDS`) and where it is."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class _Kind:
    """One kind's forms: the regex, and the lowercase literals one of which any match contains
    (``None``: no such literal, always try the regex)."""

    name: str
    sources: tuple[str, ...]
    needles: tuple[str, ...] | None
    regex: re.Pattern[str] = field(repr=False)


@dataclass(frozen=True)
class DeniedTerms:
    """The denied forms of one context under one policy, compiled once.

    ``patterns`` lists (kind, regex source) for inspection. Each kind is one case-insensitive
    regex, tried on a text only when one of its needles (a literal every form of it contains,
    such as a cell id's number) occurs in the text; :attr:`regex` is the union of all of them,
    one named group per kind, for rewriting (``None`` when the policy denies nothing).
    """

    patterns: tuple[tuple[str, str], ...]
    kinds: tuple[_Kind, ...] = field(repr=False)

    @cached_property
    def regex(self) -> re.Pattern[str] | None:
        union = "|".join(f"(?P<{k.name}>{'|'.join(k.sources)})" for k in self.kinds)
        return re.compile(union, re.IGNORECASE) if union else None

    def find(self, text: str) -> Iterator[Finding]:
        """Every denied term in ``text`` (normalised with NFKC first when it is not ASCII), kind by kind."""
        ascii_text = text.isascii()
        if not ascii_text:
            text = unicodedata.normalize("NFKC", text)
        lowered = text.lower() if ascii_text else ""
        for kind in self.kinds:
            if ascii_text and kind.needles is not None and not any(n in lowered for n in kind.needles):
                continue
            for match in kind.regex.finditer(text):
                yield Finding(KINDS[kind.name], match.start(), match.end())

    def sub(self, text: str) -> str:
        """``text`` with every denied term replaced by ``[redacted <kind>]``."""
        regex = self.regex
        if regex is None:
            return text
        out = _normal(text)
        for _ in range(4):  # a removal could join two halves into a new term: repeat until clean
            out, count = regex.subn(lambda m: f"[redacted {KINDS[m.lastgroup or '']}]", out)
            if not count:
                break
        return out


def denied_terms(context: LocationContext, policy: EgressPolicy = DEFAULT_POLICY) -> DeniedTerms:
    """The denied forms of ``context``'s values under ``policy``, cached per cell, profile and policy."""
    return _compile(context.cell, context.profile, policy)


def check_egress(
    record: Mapping[str, object], context: LocationContext, policy: EgressPolicy = DEFAULT_POLICY
) -> list[str]:
    """Every way ``record`` breaks ``policy`` for a request made in ``context``, one line each.

    Use it on every record bound for a cloud topic, and refuse a record with any violation. A
    field not on the allow-list is one violation; in allowed fields, each kind of denied term found
    is one violation naming the field (a dotted path into nested values), the kind, how many times
    and where the first is. Reasons never quote the denied values or long input.
    """
    if not isinstance(record, Mapping):
        return [f"record is a {type(record).__name__}, not an object with allowed fields"]
    terms = denied_terms(context, policy)
    reasons: list[str] = []
    for key, value in record.items():
        if not isinstance(key, str):
            reasons.append(f"field {_name(str(key), terms)} is not a string name")
        elif key not in policy.allowed_fields:
            reasons.append(f"field {_name(key, terms)} is not on the egress allow-list")
        else:
            _check_value(key, value, terms, reasons, 0)  # an allowed name is the policy's own
    return reasons


def check_message(
    value: bytes | str, context: LocationContext, policy: EgressPolicy = DEFAULT_POLICY
) -> list[str]:
    """:func:`check_egress` on an encoded message (JSON); bytes that are not a JSON object are refused."""
    try:
        record = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"message is not JSON ({type(exc).__name__}): nothing that cannot be checked leaves the edge"]
    return check_egress(record, context, policy)


def redact(text: str, context: LocationContext, policy: EgressPolicy = DEFAULT_POLICY) -> str:
    """``text`` with every term ``policy`` denies for ``context`` replaced by ``[redacted <kind>]``.

    For an edge service that would rather send a degraded prompt than refuse it (a refusal is what
    :func:`check_egress` leads to). Allowed values, such as the recommended place's name, stay.
    The record built from the result must still pass :func:`check_egress`.
    """
    return denied_terms(context, policy).sub(text)


def _check_value(path: str, value: object, terms: DeniedTerms, reasons: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        reasons.append(f"field '{path}' is nested deeper than {_MAX_DEPTH} levels")
    elif value is None or isinstance(value, bool):
        pass
    elif isinstance(value, str):
        _check_text(path, value, terms, reasons)
    elif isinstance(value, int | float):
        _check_text(path, repr(value) if isinstance(value, float) else str(value), terms, reasons)
    elif isinstance(value, bytes | bytearray):
        _check_text(path, bytes(value).decode("utf-8", "replace"), terms, reasons)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{_name(str(key), terms, quote=False)}"
            _check_text(f"{child} (key)", str(key), terms, reasons)
            _check_value(child, item, terms, reasons, depth + 1)
    elif isinstance(value, Sequence):
        for index, item in enumerate(value):
            _check_value(f"{path}[{index}]", item, terms, reasons, depth + 1)
    else:
        reasons.append(f"field '{path}' holds a {type(value).__name__}, which cannot be checked")


def _check_text(path: str, text: str, terms: DeniedTerms, reasons: list[str]) -> None:
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for finding in terms.find(text):
        first.setdefault(finding.kind, finding.start)
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    for kind, start in first.items():
        times = "once" if counts[kind] == 1 else f"{counts[kind]} times"
        reasons.append(f"field '{path}': {kind} found {times}, first at char {start}")


def _name(name: str, terms: DeniedTerms, quote: bool = True) -> str:
    """A field name fit for a reason: denied terms redacted, printable, cut short."""
    safe = terms.sub(name)
    if len(safe) > _NAME_LIMIT:
        safe = safe[: _NAME_LIMIT - 3] + "..."
    if not safe.isprintable():
        safe = "".join(c if c.isprintable() else "?" for c in safe)
    return f"'{safe}'" if quote else safe


def _normal(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


# ---------------------------------------------------------------------------------------------
# Building the forms: each builder returns (regex source, needles) pairs, needles as above.

_Form = tuple[str, tuple[str, ...] | None]
_SEP = r"[\s\-_\u2010-\u2015./:#]*"  # between the parts of an id: MI-1234, mi 1234, MI_1234, mi1234
_WORD_SEP = r"[\s\-_]+"  # between the words of a phrase: step-free / step free, night  shift


@lru_cache(maxsize=4096)
def _compile(cell: Cell, profile: UserProfile, policy: EgressPolicy) -> DeniedTerms:
    order = list(KINDS)
    kinds = _cell_kinds(cell, policy) + _profile_kinds(profile, policy)
    kinds = tuple(sorted(kinds, key=lambda k: order.index(k.name)))
    return DeniedTerms(tuple((KINDS[k.name], source) for k in kinds for source in k.sources), kinds)


@lru_cache(maxsize=1024)
def _cell_kinds(cell: Cell, policy: EgressPolicy) -> tuple[_Kind, ...]:
    forms: dict[str, list[_Form]] = {}
    if policy.deny_cell_ids:
        forms["cell_id"] = _id_forms(cell.cell, keyword="cell")
    if policy.deny_coordinates:
        values = {cell.lat, cell.lon} | {p.lat for p in cell.pois} | {p.lon for p in cell.pois}
        forms["coordinate"] = _coordinate_forms(sorted(values), policy.coordinate_decimals)
    if policy.deny_districts:
        forms["district"] = _phrase_forms(cell.district)
    if policy.deny_place_names:
        forms["place"] = [form for poi in cell.pois for form in _phrase_forms(poi.name)]
    return _kinds(forms)


@lru_cache(maxsize=4096)
def _profile_kinds(profile: UserProfile, policy: EgressPolicy) -> tuple[_Kind, ...]:
    forms: dict[str, list[_Form]] = {}
    if policy.deny_user_ids and profile.user != _ANONYMOUS:
        forms["user_id"] = _id_forms(profile.user, keyword="user")
    if policy.deny_profile:
        forms["preference"] = _preference_forms(profile.preference)
        forms["role"] = _phrase_forms(profile.role, plural=True)
    return _kinds(forms)


def _kinds(forms: dict[str, list[_Form]]) -> tuple[_Kind, ...]:
    out = []
    for name, pairs in forms.items():
        sources = list(dict.fromkeys(source for source, _ in pairs))
        if not sources:
            continue
        needles: tuple[str, ...] | None = ()
        for _, form_needles in pairs:
            needles = None if needles is None or form_needles is None else needles + form_needles
        if needles is not None:
            needles = tuple(dict.fromkeys(needles))
        out.append(_Kind(name, tuple(sources), needles, re.compile("|".join(sources), re.IGNORECASE)))
    return tuple(out)


def _needle(word: str) -> tuple[str, ...] | None:
    """A literal for the prefilter; only ASCII ones, which lowercase the way the regex folds case."""
    return (word.lower(),) if word and word.isascii() else None


def _id_forms(value: str, keyword: str) -> list[_Form]:
    """An id in any case and spacing (``MI-1234``, ``mi 1234``, ``MI_1234``); a numbered id also as its
    number after the keyword (``cell 1234``), with or without leading zeros (``u0042``, ``u42``)."""
    value = unicodedata.normalize("NFKC", value)
    parts = re.findall(r"[^\W\d_]+|\d+", value)
    if not parts:
        return [(re.escape(value), _needle(value))] if value.strip() else []
    pieces = [_number(p) if p.isdigit() else re.escape(p) for p in parts]
    digits = [p for p in parts if p.isdigit()]
    needle = _needle(digits[-1].lstrip("0") or "0") if digits else _needle(parts[0])
    forms = [(_bounded(_SEP.join(pieces), parts[0], parts[-1]), needle)]
    if parts[-1].isdigit() and len(parts) > 1:
        keyword_form = rf"\b{keyword}s?\W{{0,3}}(?:id\W{{0,3}}|no\.?\W{{0,3}})?{_number(parts[-1])}(?!\d)"
        forms.append((keyword_form, needle))
    return forms


def _number(digits: str) -> str:
    """A run of digits, with its leading zeros optional."""
    stripped = digits.lstrip("0") or "0"
    return f"0*{stripped}" if stripped != digits or digits == "0" else digits


def _bounded(pattern: str, first: str, last: str) -> str:
    """``pattern`` not glued to more of the same kind of character (``MI-1234`` is not in ``MI-12345``)."""
    before = r"(?<!\d)" if first[0].isdigit() else r"(?<![^\W\d_])"
    after = r"(?!\d)" if last[-1].isdigit() else r"(?![^\W\d_])"
    return before + pattern + after


def _coordinate_forms(values: Iterable[float], decimals: int) -> list[_Form]:
    """Coordinates in decimal degrees that agree to ``decimals`` places or more (truncated or
    rounded, any further digits, dot or comma), and in degrees-minutes-seconds to the second;
    one pattern per whole degree, so that a text is scanned once, not once per coordinate."""
    step = Decimal(1).scaleb(-decimals)
    fractions: dict[int, set[str]] = {}
    seconds_at: dict[tuple[int, int], set[int]] = {}
    for value in values:
        try:
            exact = abs(Decimal(repr(value)))
            degrees = int(exact)
        except (InvalidOperation, OverflowError, ValueError):  # nan, inf
            continue
        prefixes = {exact.quantize(step, rounding=m) for m in (ROUND_DOWN, ROUND_HALF_UP, ROUND_HALF_EVEN)}
        prefixes.add(Decimal(format(abs(value), f".{decimals}f")))
        for prefix in prefixes:
            whole, _, frac = f"{prefix:f}".partition(".")
            fractions.setdefault(int(whole), set()).add(frac)
        minutes_total = (exact - degrees) * 60
        minutes = int(minutes_total)
        seconds = (minutes_total - minutes) * 60
        for s in (int(seconds), int(seconds.quantize(Decimal(1), rounding=ROUND_HALF_UP))):
            if s < 60:
                seconds_at.setdefault((degrees, minutes), set()).add(s)
    forms: list[_Form] = []
    for degrees in sorted(set(fractions) | {d for d, _ in seconds_at}):
        branches, needles = [], []
        if degrees in fractions:
            fracs = sorted(fractions[degrees])
            branches.append(rf"[.,](?:{'|'.join(fracs)})\d*")
            needles += [sep + frac for frac in fracs for sep in ".,"]
        dms = [
            rf"0?{minutes}\s*(?:'|′|’|m(?:in)?)\s*0?(?:{'|'.join(map(str, sorted(secs)))})"
            for (d, minutes), secs in sorted(seconds_at.items())
            if d == degrees
        ]
        if dms:
            branches.append(rf"\s*(?:°|º|˚|deg(?:rees?)?)\s*(?:{'|'.join(dms)})(?:[.,]\d+)?(?!\d)")
            needles += ["deg"]  # an ASCII text can only mark degrees so
        forms.append((rf"(?<!\d){degrees}(?:{'|'.join(branches)})", tuple(needles)))
    return forms


def _phrase_forms(phrase: str, plural: bool = False) -> list[_Form]:
    """A phrase as whole words, any case, words joined by spaces, hyphens or underscores."""
    words = re.findall(r"[^\W_]+(?:['’][^\W_]+)?", unicodedata.normalize("NFKC", phrase))
    if not words:
        return []
    body = _WORD_SEP.join(re.escape(w) for w in words)
    return [(rf"(?<![^\W_]){body}{'(?:e?s)?' if plural else ''}(?![^\W_])", _needle(words[0]))]


def _preference_forms(preference: str) -> list[_Form]:
    """The stated preference, and what it says without its verb ("prefers vegetarian options" is
    also denied as "vegetarian options", "speaks English" as "English") when that is specific."""
    forms = _phrase_forms(preference)
    rest = preference.split()[1:]
    if len(rest) >= 2 or (len(rest) == 1 and len(rest[0]) >= 5):
        forms += _phrase_forms(" ".join(rest))
    return forms
