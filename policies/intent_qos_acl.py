"""Intent-driven QoS and ACL: each structured (Nile-style) intent becomes one switch decision."""

from __future__ import annotations

from nm_toolkit.schemas import Acl, Decision, QosQueue, RateLimit
from policies.base import Policy, PolicyContext
from policies.intents import NetworkIntent

DEFAULT_QUEUES = {"background": 0, "best_effort": 1, "high": 2, "critical": 3}


class IntentQosAclPolicy(Policy):
    """``allow``/``block`` -> Acl, ``prioritize`` -> QosQueue (queue per QoS class),
    ``limit`` -> RateLimit. Decisions carry the intent's tenant, so the tenant guardrail can
    keep an intent to its own targets."""

    name = "intent_qos_acl"

    def __init__(self, background: int = 0, best_effort: int = 1, high: int = 2, critical: int = 3) -> None:
        self.background = background
        self.best_effort = best_effort
        self.high = high
        self.critical = critical

    def decide(self, context: PolicyContext) -> list[Decision]:
        return [self._decision(intent, context) for intent in context.intents]

    def _decision(self, intent: NetworkIntent, context: PolicyContext) -> Decision:
        common = {
            **self.stamp(context, intent.tenant, intent.id),
            "target": intent.target,
            "tenant": intent.tenant,
            "intent_id": intent.id,
            "priority": intent.priority,
            "ttl_seconds": intent.ttl_seconds,
            "reason": f"intent {intent.id} of tenant {intent.tenant}: {intent.text or intent.action}",
        }
        # The intent's traffic, at its target: "block all traffic to the printers" matches the
        # printers' addresses, never every packet (the guardrails refuse a deny that narrows nothing).
        match = {**context.targets.get(intent.target, {}), **intent.traffic.as_match()}
        if intent.action in ("allow", "block"):
            return Acl(**common, action="allow" if intent.action == "allow" else "deny", match=match)
        if intent.action == "prioritize":
            assert intent.qos is not None  # enforced by NetworkIntent
            return QosQueue(**common, queue_id=getattr(self, intent.qos), match=match)
        assert intent.rate_kbps is not None
        return RateLimit(**common, rate_kbps=intent.rate_kbps)
