"""Typed intents: what operators ask of the network (Nile entities) and what users' prompts need.

Every inference path ends in one of three records: an :class:`OperatorIntent`, a
:class:`UserServiceIntent`, or :class:`NeedsClarification` with the reason. Validation lives in
the models, so no path can hand out an intent that breaks them; a failed validation becomes a
clarification request, never a half-valid intent.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator, model_validator

# The entity types of the Nile intent language as labelled in the Lumi data set, in a fixed order.
ENTITY_TYPES: tuple[str, ...] = (
    "operation", "origin", "destination", "target", "group", "middlebox", "traffic", "protocol",
    "service", "qos_metric", "qos_value", "qos_unit", "qos_constraint", "start", "end",
)
Action = Literal["add", "remove", "allow", "block", "set", "unset"]
ServiceClass = Literal["video", "gaming", "ar_vr", "voice", "bulk_download", "web"]
SpanText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class QosRequirement(BaseModel):
    """``set <metric>(<constraint>, <value>, <unit>)``, e.g. bandwidth max 100 mbps, quota 10 gb/wk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["bandwidth", "quota"]
    constraint: Literal["max", "min", "any"] = "max"
    value: float = Field(gt=0, allow_inf_nan=False)
    unit: Annotated[str, StringConstraints(pattern=r"^(kbps|mbps|gbps|(kb|mb|gb|tb)/(day|wk|mo))$")]


class OperatorIntent(BaseModel):
    """An operator's intent with the Nile entities: raw spans per type plus the normalised parts
    (action, QoS, hours) that compilation and conflict detection need."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["operator"] = "operator"
    text: str = Field(max_length=2000)
    action: Action
    origin: list[SpanText] = Field(default_factory=list, max_length=8)
    destination: list[SpanText] = Field(default_factory=list, max_length=8)
    target: list[SpanText] = Field(default_factory=list, max_length=8)
    group: list[SpanText] = Field(default_factory=list, max_length=8)
    middlebox: list[SpanText] = Field(default_factory=list, max_length=8)
    traffic: list[SpanText] = Field(default_factory=list, max_length=8)
    protocol: list[SpanText] = Field(default_factory=list, max_length=8)
    service: list[SpanText] = Field(default_factory=list, max_length=8)
    qos_metric: list[SpanText] = Field(default_factory=list, max_length=8)
    qos: QosRequirement | None = None
    start: ClockTime | None = None
    end: ClockTime | None = None

    @field_validator("origin", "destination", "target", "group", "middlebox", "traffic", "protocol", "service", "qos_metric")
    @classmethod
    def _printable(cls, values: list[str]) -> list[str]:
        for value in values:
            if _CONTROL.search(value):
                raise ValueError(f"entity {value!r} contains control characters")
        return values

    @model_validator(mode="after")
    def _complete(self) -> OperatorIntent:
        if self.action in ("add", "remove") and not self.middlebox:
            raise ValueError(f"'{self.action}' needs a middlebox (firewall, dpi, nat, ...)")
        if self.action == "set" and self.qos is None:
            raise ValueError("'set' needs a QoS value with its unit (e.g. 100 mbps, 10 GB per week)")
        if self.action == "unset" and not self.qos_metric:
            raise ValueError("'unset' needs the QoS rule to lift (rate limit, quota, bandwidth)")
        if self.action in ("allow", "block") and not (self.traffic or self.service or self.protocol or self.target or self.origin or self.destination or self.group):
            raise ValueError(f"'{self.action}' needs the traffic, service, protocol or endpoint it applies to")
        if (self.start is None) != (self.end is None):
            raise ValueError("a time window needs both a start and an end hour")
        return self


class UserServiceIntent(BaseModel):
    """What a user's prompt implies the network must deliver, where, and when. It carries no
    operator power: it is demand (for forecasting and admission), never a network change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["user_service"] = "user_service"
    request_id: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=2000)
    service_class: ServiceClass
    bandwidth_mbps: float = Field(gt=0, le=10_000)
    latency_ms: float = Field(gt=0, le=60_000)
    location: str | None = Field(default=None, max_length=256)
    start: ClockTime | None = None
    end: ClockTime | None = None


class NeedsClarification(BaseModel):
    """No valid intent could be formed; ``reason`` says what is missing or wrong."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["needs_clarification"] = "needs_clarification"
    text: str = Field(max_length=2000)
    reason: str
    span: str | None = Field(default=None, max_length=2000, description="the part of the text in doubt, where there is one")
    source: Literal["operator", "user"] = "operator"
    request_id: str | None = None


IntentResult = Annotated[OperatorIntent | UserServiceIntent | NeedsClarification, Field(discriminator="kind")]
IntentResultAdapter: TypeAdapter[IntentResult] = TypeAdapter(IntentResult)
