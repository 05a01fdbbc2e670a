"""Typed records that travel on the bus: telemetry in, series, forecasts and decisions out.

Every record is a pydantic model so that what a service reads from a topic is validated once at
the edge, and what it writes is the same shape another service (or another language) can read.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
)

MAX_IDENTIFIER_LENGTH = 256
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_IDENTIFIER_LENGTH)]

MAX_ABS_VALUE = 1e30
"""The largest magnitude a telemetry value may have.

Far beyond any physical network quantity (all of the Internet's traffic is about 1e15 B/s), and
small enough that a window sum can never overflow to inf: it would take 1e278 records of 1e30
in one window to pass the largest float (1.8e308), where an unbounded value of 1e308 overflows
with the second record and the window is published as ``null``.
"""


def is_identifier(value: object) -> bool:
    """Whether ``value`` is an identifier as is: a non-empty string of at most 256 characters
    without outer whitespace (the form :data:`Identifier` normalises to), for the fast paths that
    check names without building models."""
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_LENGTH and value == value.strip()


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error reason quotes what was wrong, but it is
    one line in a message header, not a copy of a megabyte of bad input."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested deeper than repr recurses; an int of > 4300 digits
        text = f"<{type(value).__name__} too large to quote>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC; aware ones are converted to UTC.

    Year 1 east of Greenwich and year 9999 west of it have no UTC equivalent (datetime would raise
    OverflowError, which no caller expects): they are reported as invalid values instead.
    """
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    if not offset:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the representable range (years 1-9999) in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def _bounded(value: float) -> float:
    if -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        return value
    raise ValueError(f"magnitude exceeds {MAX_ABS_VALUE:g}")


TelemetryValue = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_bounded)]
"""A measurement: a JSON number (ints are fine), never a string or a boolean, finite and at most
:data:`MAX_ABS_VALUE` in magnitude. Strict because ``"12.5"`` or ``true`` as a value is a producer
bug that lax parsing would hide."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Location(BaseModel):
    """Where a measurement was taken: a cell or site id, optionally with coordinates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell: Identifier | None = None
    site: Identifier | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class TelemetryRecord(BaseModel):
    """One measurement: ``value`` of ``metric`` at ``source`` and time ``ts``.

    ``ts`` accepts ISO-8601 strings and Unix epoch numbers (seconds, or milliseconds for values
    past 2e10, as pydantic infers) and is always held in UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: UtcDatetime
    source: Identifier
    metric: Identifier
    value: TelemetryValue
    unit: Annotated[str, StringConstraints(max_length=32)] = ""
    location: Location | None = None

    @property
    def series_id(self) -> str:
        """The key of the time series this record belongs to."""
        return series_key(self.source, self.metric)


class TelemetryBatch(BaseModel):
    """Many records in one message: the efficient wire form for high-rate producers."""

    model_config = ConfigDict(extra="forbid")

    records: list[TelemetryRecord]


def series_key(source: str, metric: str) -> str:
    """Series are keyed ``source|metric``; that key also partitions the telemetry topic."""
    return f"{source}|{metric}"


# What the LLM services report about themselves on the telemetry topic (counts per window; glob
# patterns): their own load, which network policies such as bandwidth reservation must not take
# for link traffic.
LLM_LOAD_METRICS: tuple[str, ...] = (
    "prompts", "escalated", "answered_at_edge", "edge_to_cloud_bytes", "queue_delay_ms", "adapter.*.requests",
    "requests", "tokens", "demand.*",
)  # fmt: skip


def split_series_key(key: str) -> tuple[str, str]:
    source, _, metric = key.rpartition("|")
    if not source:
        raise ValueError(f"series id {key!r} is not of the form SOURCE|METRIC")
    return source, metric


class SeriesPoint(BaseModel):
    """One closed tumbling window of one series: what the collectors emit downstream.

    Read back from the series topic, so validated like any input: finite aggregates, at least one
    record, a positive window. Whether ``window_start`` is plausible depends on the time of reading
    and is the consumer's check (:class:`nm_toolkit.eventtime.EventTimeBounds`).
    """

    model_config = ConfigDict(frozen=True)

    source: str
    metric: str
    window_start: UtcDatetime
    window_seconds: int = Field(gt=0)
    count: int = Field(gt=0)
    sum: FiniteFloat
    min: FiniteFloat
    max: FiniteFloat
    unit: str = ""
    location: Location | None = None

    @property
    def series_id(self) -> str:
        return series_key(self.source, self.metric)

    @property
    def mean(self) -> float:
        return self.sum / self.count


class Forecast(BaseModel):
    """Point forecasts with a prediction interval for the next ``len(mean)`` steps of a series."""

    series_id: str
    model: str
    issued_at: UtcDatetime
    step_seconds: int
    start: UtcDatetime
    mean: list[FiniteFloat] = Field(min_length=1)
    lower: list[FiniteFloat]
    upper: list[FiniteFloat]
    level: float = 0.9
    note: str = ""

    @property
    def horizon(self) -> int:
        return len(self.mean)


class DecisionBase(BaseModel):
    """What every decision carries: who made it, why, for how long, and whether to apply it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    idempotency_key: str
    policy: str
    target: str
    priority: int = 100
    ttl_seconds: float = 3600.0
    reason: str
    created_at: UtcDatetime = Field(default_factory=lambda: datetime.now(UTC))
    dry_run: bool = False
    tenant: str | None = None
    intent_id: str | None = Field(default=None, description="the operator intent it carries out: withdrawn once that intent is retracted")


class RateLimit(DecisionBase):
    """Meter traffic of a flow, cell or link to ``rate_kbps`` (with an optional burst)."""

    kind: Literal["rate_limit"] = "rate_limit"
    rate_kbps: float = Field(gt=0)
    burst_kb: float | None = Field(default=None, gt=0)


class Reservation(DecisionBase):
    """Reserve ``bandwidth`` (in the series' unit per second) for a cell or link."""

    kind: Literal["reservation"] = "reservation"
    bandwidth: float = Field(ge=0)
    capacity: float = Field(gt=0)
    forecast_peak: float
    series_id: str | None = Field(default=None, description="the forecast series the reservation covers")


class Acl(DecisionBase):
    """Allow or deny traffic matching ``match`` (OpenFlow-style field names)."""

    kind: Literal["acl"] = "acl"
    action: Literal["allow", "deny"]
    match: dict[str, str | int]


class QosQueue(DecisionBase):
    """Put traffic matching ``match`` into switch queue ``queue_id``."""

    kind: Literal["qos_queue"] = "qos_queue"
    queue_id: int = Field(ge=0)
    match: dict[str, str | int]


class Reroute(DecisionBase):
    """Send traffic matching ``match`` over ``path`` (a list of node ids)."""

    kind: Literal["reroute"] = "reroute"
    path: list[str] = Field(min_length=2)
    match: dict[str, str | int]


class ScaleCompute(DecisionBase):
    """Run ``replicas`` edge-LLM workers at ``target`` (a site)."""

    kind: Literal["scale_compute"] = "scale_compute"
    replicas: int = Field(ge=0)


class PlaceAdapter(DecisionBase):
    """Pre-load LoRA adapter ``adapter`` at edge site ``target``."""

    kind: Literal["place_adapter"] = "place_adapter"
    adapter: str


class PlaceModel(DecisionBase):
    """Serve edge site ``target`` with the edge model at ``model`` (a checkpoint directory),
    int8-quantised or not: the one that fits the site's compute and latency budget."""

    kind: Literal["place_model"] = "place_model"
    model: str
    quantize: bool = False


Decision = Annotated[
    RateLimit | Reservation | Acl | QosQueue | Reroute | ScaleCompute | PlaceAdapter | PlaceModel,
    Field(discriminator="kind"),
]
DecisionAdapter: TypeAdapter[Decision] = TypeAdapter(Decision)


class PromptMessage(BaseModel):
    """A request on the prompts topic; ``location`` is a cell id or a location object with a cell."""

    model_config = ConfigDict(extra="forbid")

    request_id: Identifier
    text: str
    location: Identifier | Location
    user: Identifier | None = None
    task: Identifier | None = None
    adapter: Identifier | None = None
    tenant: Identifier | None = Field(default=None, description="whose cloud adapter answers it (default: the cloud's general one)")
    deadline_s: float | None = Field(default=None, gt=0, le=86_400, description="seconds the user waits for an answer, from arrival")
    ts: UtcDatetime | None = None

    @property
    def cell(self) -> str | None:
        return self.location if isinstance(self.location, str) else self.location.cell
