"""Port queues in Open vSwitch's database: the QoS and Queue rows that ``set_queue`` actions need.

OpenFlow can point a packet at a queue but cannot create one; on Open vSwitch queues are rows
in OVSDB. This module keeps them equal to the queues the decisions in force name: one QoS row
(``controller.queues.qos_type``) on every managed port, holding one Queue row per queue id, with
``min-rate`` for a guarantee and ``max-rate`` for a cap. Every change is one ``ovs-vsctl``
transaction, so a port never holds half a change. Rows it owns carry ``external_ids:nmt``; a
port whose QoS belongs to someone else is left alone (and reported).

:func:`sync_commands` is pure (a snapshot and the wanted queues in, ``ovs-vsctl`` arguments out);
:class:`OvsdbQueues` reads the snapshot and runs the transaction.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nm_toolkit.config import QueueSettings
from nm_toolkit.controller.openflow import QueuePlan

log = logging.getLogger(__name__)

OWNER = "nmt"  # external_ids key on the rows this module owns
QUEUE_ID = "nmt-queue-id"


class QueueSyncError(RuntimeError):
    """OVSDB could not be read or refused the transaction."""


@dataclass(frozen=True)
class PortRow:
    uuid: str
    name: str
    qos: str | None


@dataclass(frozen=True)
class QueueRow:
    uuid: str
    queue_id: int
    other_config: dict[str, str]


@dataclass
class Snapshot:
    """What OVSDB holds now: the ports to manage, this module's QoS row and Queue rows."""

    ports: list[PortRow] = field(default_factory=list)
    qos: str | None = None
    qos_config: tuple[str, dict[int, str], dict[str, str]] | None = None  # its type, queues, other_config
    queues: dict[int, QueueRow] = field(default_factory=dict)


def queue_config(queue: QueuePlan) -> dict[str, str]:
    """A Queue row's ``other_config``: rates in bit/s, as OVS reads them."""
    config = {}
    if queue.min_kbps is not None:
        config["min-rate"] = str(queue.min_kbps * 1000)
    if queue.max_kbps is not None:
        config["max-rate"] = str(queue.max_kbps * 1000)
    if queue.priority is not None:
        config["priority"] = str(queue.priority)
    return config


def qos_config(settings: QueueSettings) -> dict[str, str]:
    return {} if settings.port_max_kbps is None else {"max-rate": str(round(settings.port_max_kbps * 1000))}


def _map(values: Mapping[Any, str]) -> str:
    """An OVSDB map in ovs-vsctl syntax: ``{"k"="v", ...}`` (``{}`` when empty)."""
    return "{" + ", ".join(f'"{key}"="{value}"' for key, value in sorted(values.items())) + "}"


def sync_commands(snapshot: Snapshot, wanted: Mapping[int, QueuePlan], settings: QueueSettings) -> list[str]:
    """The ``ovs-vsctl`` arguments (one transaction) that make OVSDB hold exactly ``wanted`` on
    the snapshot's ports; empty when it already does. Queue 0 is always present while any queue
    is, since a port's unmarked traffic goes to it."""
    if wanted and 0 not in wanted:
        wanted = {0: QueuePlan(0), **wanted}
    args: list[str] = []
    refs: dict[int, str] = {}  # queue id -> its row: a uuid, or @qN for one this transaction creates
    for queue_id, queue in sorted(wanted.items()):
        config = queue_config(queue)
        row = snapshot.queues.get(queue_id)
        if row is None:
            refs[queue_id] = f"@q{queue_id}"
            args += ["--", f"--id=@q{queue_id}", "create", "Queue", f"other_config={_map(config)}",
                     f"external_ids={_map({OWNER: 'queue', QUEUE_ID: str(queue_id)})}"]
        else:
            refs[queue_id] = row.uuid
            if row.other_config != config:
                args += ["--", "set", "Queue", row.uuid, f"other_config={_map(config)}"]
    if wanted:
        queues = "queues={" + ", ".join(f"{queue_id}={ref}" for queue_id, ref in sorted(refs.items())) + "}"
        port_config = qos_config(settings)
        qos = snapshot.qos or "@qos"
        if snapshot.qos is None:
            args += ["--", "--id=@qos", "create", "QoS", f"type={settings.qos_type}", queues,
                     f"other_config={_map(port_config)}", f"external_ids={_map({OWNER: 'qos'})}"]
        elif snapshot.qos_config != (settings.qos_type, refs, port_config):
            args += ["--", "set", "QoS", qos, f"type={settings.qos_type}", queues, f"other_config={_map(port_config)}"]
        for port in snapshot.ports:
            if port.qos is None:
                args += ["--", "set", "Port", port.uuid, f"qos={qos}"]
    else:
        for port in snapshot.ports:
            if port.qos is not None:
                args += ["--", "clear", "Port", port.uuid, "qos"]
        if snapshot.qos is not None:
            args += ["--", "destroy", "QoS", snapshot.qos]
    for queue_id, row in sorted(snapshot.queues.items()):
        if queue_id not in wanted:
            args += ["--", "destroy", "Queue", row.uuid]
    return args


class OvsdbQueues:
    """Keeps the managed ports' queues equal to what it is given, over ``ovs-vsctl``."""

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.synced: dict[int, QueuePlan] | None = None  # what OVSDB held after the last sync
        self.foreign_ports: list[str] = []

    def sync(self, wanted: Mapping[int, QueuePlan], force: bool = False) -> None:
        """Make OVSDB hold ``wanted``. Unless ``force``, OVSDB is not touched when it held
        ``wanted`` after the last sync, or when nothing was ever synced and nothing is wanted (a
        controller without queue decisions needs no OVSDB). Raises :class:`QueueSyncError`."""
        if not force and (self.synced == dict(wanted) or (self.synced is None and not wanted)):
            return
        snapshot = self.snapshot()
        args = sync_commands(snapshot, wanted, self.settings)
        if args:
            self.vsctl(*args)
        self.synced = dict(wanted)

    def snapshot(self) -> Snapshot:
        tables = self.vsctl(
            "--format=json", "--data=json",
            "--", "--columns=name,ports", "list", "Bridge",
            "--", "--columns=_uuid,name,qos", "list", "Port",
            "--", "--columns=_uuid,type,queues,other_config,external_ids", "list", "QoS",
            "--", "--columns=_uuid,other_config,external_ids", "list", "Queue",
        ).splitlines()
        bridges, ports, qoses, queues = ([_row(row) for row in json.loads(table)["data"]] for table in tables)
        snapshot = Snapshot()
        for uuid, kind, queue_refs, other_config, external_ids in qoses:
            if external_ids.get(OWNER) == "qos":
                snapshot.qos = uuid
                snapshot.qos_config = (kind, queue_refs, other_config)
        for uuid, other_config, external_ids in queues:
            if external_ids.get(OWNER) == "queue":
                queue_id = int(external_ids[QUEUE_ID])
                snapshot.queues[queue_id] = QueueRow(uuid, queue_id, other_config)
        local = {name for name, _ in bridges}  # a bridge's own port carries traffic to the host
        names = set(self.settings.ports) or {name for name in (p[1] for p in ports) if name not in local}
        self.foreign_ports = []
        for uuid, name, qos in ports:
            if name not in names:
                continue
            qos = qos or None
            if qos is not None and qos != snapshot.qos:
                self.foreign_ports.append(name)
                continue
            snapshot.ports.append(PortRow(uuid, name, qos))
        if self.foreign_ports:
            log.warning("ports %s have a QoS this controller does not own: their queues are left alone", self.foreign_ports)
        return snapshot

    def vsctl(self, *args: str) -> str:
        if shutil.which("ovs-vsctl") is None:
            raise QueueSyncError("ovs-vsctl is not installed; install openvswitch-common, or empty controller.queues.ovsdb")
        argv = ["ovs-vsctl", f"--db={self.settings.ovsdb}", "--timeout=10", *args]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise QueueSyncError(f"ovs-vsctl --db={self.settings.ovsdb} failed: {done.stderr.strip()}")
        return done.stdout


def _row(row: list[Any]) -> list[Any]:
    """OVSDB JSON values to Python: uuids as text, maps as dicts, sets (empty: none) as lists."""
    return [_value(value) for value in row]


def _value(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    kind, data = value
    if kind == "uuid":
        return data
    if kind == "map":
        return {key: _value(item) for key, item in data}
    return [_value(item) for item in data] or ""
