"""Faucet adapter: the decisions in force for datapath ``controller.faucet_dp`` as a Faucet ACL
(``nmt-<dp>``) and its meters (``nmt-<dp>-<id>``), in one YAML file that Faucet's main config
includes, the datapath's ports applying the ACL to what they receive::

    # faucet.yaml
    include: [faucet-nmt.yaml]
    dps: {sw1: {dp_id: 1, interfaces: {1: {native_vlan: 100, acls_in: [nmt-sw1]}}}}

(Port ACLs, not ``dp_acls``: Faucet 1.10.12 does not reprogram a changed ``dp_acls`` ACL when it
reloads its configuration without a cold start; port ACLs it does.)

One file per datapath (each its own ``faucet_config``) keeps the names apart. The file is
rewritten atomically after every change, with a final allow-all rule so traffic no decision
matches is forwarded as before. Faucet reads it again on SIGHUP, or on its own when it runs with
``FAUCET_CONFIG_STAT_RELOAD=1``. Queues are not Faucet ACL actions: a decision whose flow names a
queue (a reservation, a QoS class) is reported unsupported; caps are meters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from nm_toolkit.config import ControllerSettings
from nm_toolkit.controller.base import ControllerAdapter, Outcome
from nm_toolkit.controller.openflow import FlowPlan
from nm_toolkit.controller.state import DesiredState, Entry, plan_entry
from nm_toolkit.schemas import Decision


def acl_name(dp: str) -> str:
    return f"nmt-{dp}"


def faucet_rule(plan: FlowPlan, meter_name: str | None) -> dict[str, Any]:
    """One Faucet ACL rule: the match in Ryu field names (Faucet's), masked prefixes as text."""
    rule: dict[str, Any] = {}
    for name, value in plan.match:
        rule[name] = f"{value[0]}/{value[1]}" if isinstance(value, tuple) else value
    actions: dict[str, Any] = {"allow": plan.action != "drop"}
    if plan.action == "output":
        actions = {"allow": True, "output": {"port": plan.out_port}}
    if meter_name is not None and plan.action != "drop":
        actions["meter"] = meter_name
    rule["actions"] = actions
    return {"rule": rule}


def faucet_config(entries: Sequence[Entry], dp: str) -> dict[str, Any]:
    """The ``acls`` and ``meters`` sections for ``entries`` on datapath ``dp``, highest priority
    first (Faucet matches ACL rules in order), ending in allow-all."""
    rules, meters = [], {}
    for entry in sorted(entries, key=lambda e: -e.plan.priority):
        meter = entry.plan.meter
        name = None if meter is None else f"{acl_name(dp)}-{meter.meter_id}"
        if meter is not None:
            bands = [{"type": "DROP", "rate": meter.rate_kbps, **({"burst_size": meter.burst_kb} if meter.burst_kb else {})}]
            meters[name] = {"meter_id": meter.meter_id, "entry": {"flags": ["KBPS"] + (["BURST"] if meter.burst_kb else []), "bands": bands}}
        rules.append(faucet_rule(entry.plan, name))
    rules.append({"rule": {"actions": {"allow": True}}})
    config: dict[str, Any] = {"acls": {acl_name(dp): rules}}
    if meters:
        config["meters"] = meters
    return config


class FaucetAdapter(ControllerAdapter):
    """Keeps ``settings.faucet_config`` equal to the decisions in force on ``settings.faucet_dp``."""

    name = "faucet"

    def __init__(self, settings: ControllerSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.state = DesiredState()

    @property
    def path(self) -> Path:
        return self.settings.faucet_config

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        outcomes = []
        for decision in decisions:
            entry = plan_entry(decision, self.state, self.settings, self.clock())
            if isinstance(entry, Outcome):
                outcomes.append(entry)
                continue
            if entry.plan.queue is not None:
                outcomes.append(Outcome(entry.key, decision.kind, "unsupported", "Faucet ACLs cannot set queues"))
                continue
            changed = self.state.upsert(entry).changed
            outcomes.append(Outcome(entry.key, decision.kind, "applied" if changed else "unchanged", str(self.path)))
        if any(o.status == "applied" for o in outcomes) or not self.path.exists():
            self._write()
        return outcomes

    def expire(self, now: float) -> list[str]:
        gone = [entry.key for entry in self.state.expire(now)]
        if gone:
            self._write()
        return gone

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        gone = [key for key in keys if self.state.remove(key) is not None]
        if gone:
            self._write()
        return gone

    def _write(self) -> None:
        """Write to a temporary file and rename it, so Faucet never reads half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(yaml.safe_dump(faucet_config(self.state.entries(), self.settings.faucet_dp), sort_keys=False))
        os.replace(tmp, self.path)
