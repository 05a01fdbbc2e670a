"""An operator's "prioritize X" (Nile: a middlebox on X's path) becomes a QoS queue at the switch."""

from __future__ import annotations

from datetime import UTC, datetime

from intent.nile import to_network_intent
from intent.schema import OperatorIntent
from nm_toolkit.config import PolicySettings
from nm_toolkit.schemas import QosQueue
from policies.base import PolicyContext
from policies.intent_qos_acl import IntentQosAclPolicy


def test_prioritize_becomes_the_high_priority_queue_for_the_targets_traffic() -> None:
    intent = OperatorIntent(text="Prioritize VoIP traffic on the meeting room 23", action="add", middlebox=["Prioritize"],
                            traffic=["VoIP"], target=["on the meeting room 23"])  # fmt: skip
    network = to_network_intent(intent, "op-9", "operator")
    assert network is not None and network.action == "prioritize" and network.qos == "high"
    context = PolicyContext(now=datetime.now(UTC), settings=PolicySettings(), intents=[network],
                            targets={network.target: {"ipv4_dst": "10.0.23.0/24"}})  # fmt: skip
    (decision,) = IntentQosAclPolicy().decide(context)
    assert isinstance(decision, QosQueue) and decision.queue_id == 2 and decision.match == {"ipv4_dst": "10.0.23.0/24"}
    assert decision.intent_id == "op-9"
    # another middlebox stays in Nile: no switch-level meaning
    assert to_network_intent(intent.model_copy(update={"middlebox": ["dpi"]}), "op-10", "operator") is None
