"""A minimal typed form of Nile-style network intents, the input of the intent-driven policy.

Nile (Jacobs et al., 2018) writes intents such as::

    define intent voipIntent: for group('tenant-a-voice') allow traffic('udp/5060')
        set qos('high')

The intent module turns operator text into these records; here they are already structured.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from nm_toolkit.schemas import Identifier

QosClass = Literal["background", "best_effort", "high", "critical"]


class TrafficSelector(BaseModel):
    """Which traffic an intent is about; every field left out matches anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Literal["tcp", "udp", "any"] = "any"
    port: int | None = Field(default=None, ge=1, le=65535)
    src: str | None = None
    dst: str | None = None

    @field_validator("src", "dst")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.IPv4Network(value, strict=False))

    def as_match(self) -> dict[str, str | int]:
        """The OpenFlow-style match of this selector (field names as in the Acl decision)."""
        match: dict[str, str | int] = {}
        if self.src:
            match["ipv4_src"] = self.src
        if self.dst:
            match["ipv4_dst"] = self.dst
        if self.protocol != "any":
            match["ip_proto"] = 6 if self.protocol == "tcp" else 17
            if self.port is not None:
                match[f"{self.protocol}_dst"] = self.port
        return match


class NetworkIntent(BaseModel):
    """``for <target> <action> traffic(<selector>) [set qos(<class>)] [set bandwidth(<rate>)]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    tenant: Identifier
    target: Identifier = Field(description="the endpoint, cell or site the intent is for")
    action: Literal["allow", "block", "prioritize", "limit"]
    traffic: TrafficSelector = Field(default_factory=TrafficSelector)
    qos: QosClass | None = None
    rate_kbps: PositiveFloat | None = None
    priority: int = Field(default=100, ge=0, le=60000)
    ttl_seconds: PositiveFloat = 3600.0
    text: str = Field(default="", description="the operator's words the intent came from")

    @model_validator(mode="after")
    def _action_arguments(self) -> NetworkIntent:
        if self.action == "prioritize" and self.qos is None:
            raise ValueError(f"intent {self.id}: 'prioritize' needs a qos class ({', '.join(QosClass.__args__)})")
        if self.action == "limit" and self.rate_kbps is None:
            raise ValueError(f"intent {self.id}: 'limit' needs rate_kbps")
        return self
