"""The privacy guardrail on edge-to-cloud traffic, tested by content: what the context store knows
about a request (cell id, coordinates, user id, profile) never appears in a cloud-bound record in
any rendering, while the completed prompt (place name, category, distance) passes."""

from __future__ import annotations

import json
import random
from decimal import ROUND_DOWN, Decimal

import pytest

from nm_toolkit.llm.completion_data import (
    build_completion_dataset,
    cloud_only_payload,
    nearest_by_category,
    places_text,
)
from nm_toolkit.llm.context import ContextStore, LocationContext, synthetic_city
from nm_toolkit.llm.privacy import (
    DEFAULT_ALLOWED_FIELDS,
    EgressPolicy,
    check_egress,
    check_message,
    denied_terms,
    redact,
)

CATEGORY = "cafe"


@pytest.fixture(scope="module")
def store() -> ContextStore:
    return synthetic_city(7)


@pytest.fixture(scope="module")
def context(store: ContextStore) -> LocationContext:
    cell = sorted(store.cells.values(), key=lambda c: c.cell)[5]
    return LocationContext(cell, "evening", store.profiles["u0042"])


def completion(context: LocationContext, category: str = CATEGORY) -> str:
    """A clean completed prompt: what the cloud needs, with the recommended place named."""
    poi = nearest_by_category(context.cell.pois)[category]
    return (
        f"Recommend a {category} near me this {context.time_of_day}. "
        f"The nearest {category} is {poi.name}, {poi.distance_m} m away."
    )


def record(text: str, **extra: object) -> dict[str, object]:
    base = {"request_id": "req-1", "text": text, "service_class": "chat", "deadline_ms": 800, "tenant": "acme"}
    return base | extra


def kinds(reasons: list[str]) -> set[str]:
    return {r.split(": ", 1)[1].split(" found")[0] for r in reasons if ": " in r}


def trunc(value: float, places: int) -> str:
    return str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN))


def dms(value: float) -> tuple[int, int, int]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return degrees, minutes, int(((value - degrees) * 60 - minutes) * 60)


def denied_forms(context: LocationContext) -> list[tuple[str, str]]:
    """(kind, text) for every rendering of a denied value the guardrail must catch."""
    cell, user = context.cell, context.profile
    prefix, number = cell.cell.split("-")
    user_number = int(user.user.removeprefix("u"))
    poi = cell.pois[3]
    forms = [
        ("cell id", cell.cell), ("cell id", cell.cell.lower()), ("cell id", f"{prefix} {number}"),
        ("cell id", f"{prefix.lower()}_{number}"), ("cell id", f"{prefix}{number}"),
        ("cell id", f"(cell {number})"), ("cell id", f"Cell #{number}"),
        ("cell id", "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in cell.cell)),  # full width
        ("user id", user.user), ("user id", user.user.upper()), ("user id", f"u{user_number}"),
        ("user id", f"user {user_number}"), ("user id", f"user id: {user.user}"),
        ("profile role", user.role), ("profile role", user.role.upper()), ("profile role", f"{user.role}s"),
        ("profile preference", user.preference), ("profile preference", user.preference.title()),
        ("profile preference", user.preference.split(" ", 1)[1]),
    ]
    for value in (cell.lat, cell.lon, poi.lat, poi.lon):
        for places in (3, 4, 5, 6):
            rounded = f"{value:.{places}f}"
            forms += [("coordinate", rounded), ("coordinate", rounded.replace(".", ",")),
                      ("coordinate", trunc(value, places))]
        degrees, minutes, seconds = dms(value)
        forms += [
            ("coordinate", f"{degrees}°{minutes}'{seconds}\""), ("coordinate", f"{degrees}° {minutes}′ {seconds}.4″"),
            ("coordinate", f"{degrees} deg {minutes} min {seconds}"),
        ]
    forms += [
        ("coordinate", f"{cell.lat},{cell.lon}"), ("coordinate", f"[{cell.lon}, {cell.lat}]"),
        ("coordinate", f"lat={cell.lat:.4f}&lon={cell.lon:.4f}"), ("coordinate", f"{cell.lat:.5f}N"),
    ]
    return forms


def test_a_clean_completed_prompt_passes(context: LocationContext) -> None:
    text = completion(context)
    places = "places: " + places_text(context)  # "places: Bar X (cafe, 120 m); ..."
    for candidate in (text, places, f"{text} Also near: {places.removeprefix('places: ')}"):
        assert check_egress(record(candidate), context) == []
        assert check_message(json.dumps(record(candidate)).encode(), context) == []
    assert nearest_by_category(context.cell.pois)[CATEGORY].name in text


def test_every_denied_form_in_text_is_caught(context: LocationContext) -> None:
    forms = denied_forms(context)
    assert len(forms) > 60
    missed = []
    for kind, form in forms:
        reasons = check_egress(record(f"{completion(context)} Context: {form}."), context)
        if kind not in kinds(reasons):
            missed.append((kind, form, reasons))
        assert all(r.startswith("field 'text': ") for r in reasons)
        assert not any(form in r for r in reasons if len(form) > 3), "a reason must not quote the denied value"
    assert missed == []


def test_denied_values_are_caught_in_every_allowed_field_and_nested_value(context: LocationContext) -> None:
    cell = context.cell
    reasons = check_egress(
        record(
            "ok", tenant={"where": {"lat": cell.lat}, "ids": [cell.cell]}, deadline_ms=cell.lon,
            request_id=context.profile.user,
        ),
        context,
    )
    assert "field 'tenant.where.lat': coordinate found once, first at char 0" in reasons
    assert "field 'tenant.ids[0]': cell id found once, first at char 0" in reasons
    assert "field 'deadline_ms': coordinate found once, first at char 0" in reasons
    assert "field 'request_id': user id found once, first at char 0" in reasons
    twice = check_egress(record(f"{cell.cell} then {cell.cell.lower()}"), context)
    assert twice == ["field 'text': cell id found 2 times, first at char 0"]


@pytest.mark.parametrize("field", ["lat", "lon", "profile", "cell", "user", "context", "location", "coordinates"])
def test_a_field_off_the_allow_list_is_refused_whatever_it_holds(context: LocationContext, field: str) -> None:
    reasons = check_egress(record(completion(context), **{field: "harmless"}), context)
    assert reasons == [f"field '{field}' is not on the egress allow-list"]


def test_reasons_stay_short_and_never_quote_denied_values(context: LocationContext) -> None:
    long_name = "x" * 5000
    reasons = check_egress({long_name: 1, context.cell.cell: 2, 7: 3}, context)
    assert len(reasons) == 3 and all(len(r) < 120 for r in reasons)
    assert not any(context.cell.cell.lower() in r.lower() for r in reasons)
    assert "[redacted cell id]" in reasons[1]
    not_a_record: object = ["not", "a", "record"]
    assert check_egress(not_a_record, context) == ["record is a list, not an object with allowed fields"]  # type: ignore[arg-type]
    assert check_message(b"\xff not json", context)[0].startswith("message is not JSON")
    assert check_message(b"[1, 2]", context) == ["record is a list, not an object with allowed fields"]


def test_the_cloud_only_payload_is_flagged(context: LocationContext) -> None:
    """The raw-context baseline the bench compares against must fail: the check has teeth."""
    payload = cloud_only_payload("coffee near me", context)
    assert check_message(payload, context) == ["field 'context' is not on the egress allow-list"]
    # even with the field allowed, its content is refused, value by value
    lenient = EgressPolicy(allowed_fields=DEFAULT_ALLOWED_FIELDS | {"context"})
    reasons = check_message(payload, context, lenient)
    assert kinds(reasons) == {"cell id", "coordinate", "user id", "profile role", "profile preference"}
    coordinate_paths = {r.split("'")[1] for r in reasons if "coordinate" in r}
    assert {"context.cell.lat", "context.cell.lon"} <= coordinate_paths
    assert len(coordinate_paths) == 2 + 2 * len(context.cell.pois)
    assert not any(str(context.cell.lat) in r or context.cell.cell in r for r in reasons)


def test_redact_removes_every_denied_form_and_keeps_the_place(context: LocationContext) -> None:
    forms = [form for _, form in denied_forms(context)]
    text = completion(context) + " " + " | ".join(forms)
    redacted = redact(text, context)
    assert check_egress(record(redacted), context) == []
    assert nearest_by_category(context.cell.pois)[CATEGORY].name in redacted
    assert redacted.startswith(completion(context))
    lowered = redacted.lower()
    for form in forms:
        if len(form) > 3:
            assert form.lower() not in lowered, form
    assert redact(completion(context), context) == completion(context)


def test_districts_and_place_names_are_denied_only_when_the_policy_says_so(context: LocationContext) -> None:
    text = f"I am in {context.cell.district}. {completion(context)}"
    assert check_egress(record(text), context) == []
    assert kinds(check_egress(record(text), context, EgressPolicy(deny_districts=True))) == {"district name"}
    assert kinds(check_egress(record(text), context, EgressPolicy(deny_place_names=True))) == {"place name"}
    place = nearest_by_category(context.cell.pois)[CATEGORY].name
    assert place not in redact(text, context, EgressPolicy(deny_place_names=True))
    nothing = EgressPolicy(deny_cell_ids=False, deny_coordinates=False, deny_user_ids=False, deny_profile=False)
    everything = f"{context.cell.cell} {context.cell.lat} {context.profile.role}"
    assert check_egress(record(everything), context, nothing) == []
    assert redact(context.cell.cell, context, nothing) == context.cell.cell


def test_what_is_not_denied(context: LocationContext) -> None:
    """Coarse or other values stay allowed: two decimals (about 1 km), another cell's id, a longer number."""
    cell = context.cell
    number = cell.cell.split("-")[1]
    for text in (f"around {cell.lat:.2f}", f"MI-{number}5", f"{number}7 requests", f"1{cell.lat}"):
        assert check_egress(record(text), context) == [], text


def test_policy_and_cache(context: LocationContext) -> None:
    assert denied_terms(context) is denied_terms(context)
    assert denied_terms(context) is denied_terms(LocationContext(context.cell, "morning", context.profile))
    assert EgressPolicy(allowed_fields={"text"}).allowed_fields == frozenset({"text"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EgressPolicy(allowed_fields="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EgressPolicy(coordinate_decimals=0)
    kinds_listed = {kind for kind, _ in denied_terms(context).patterns}
    assert kinds_listed == {"cell id", "user id", "coordinate", "profile role", "profile preference"}


def test_no_false_positives_and_no_misses_over_many_synthetic_contexts() -> None:
    """Seeded and bounded: the data set's targets (the completed prompts the edge sends) pass in
    every context, and a denied form injected into them is always caught and redacted."""
    rng = random.Random(12)
    checked = 0
    for seed in range(5):
        store = synthetic_city(seed, districts=12, cells_per_district=3, users=40)
        train, test = build_completion_dataset(store, 30, 10, seed)
        for example in train + test:
            context = LocationContext(store.cells[example.cell], example.time_of_day, store.profiles[example.user])
            clean = example.target
            assert clean.startswith("Recommend a ")
            assert check_egress(record(clean), context) == [], clean
            assert check_egress(record(f"{example.text} -> {clean}"), context) == []
            kind, form = rng.choice(denied_forms(context))
            dirty = f"{clean} ({form})"
            assert kind in kinds(check_egress(record(dirty), context)), form
            assert check_egress(record(redact(dirty, context)), context) == []
            checked += 1
    assert checked == 200
