"""The OpenFlow side of the controller: keeps the desired state and pushes it to every connected
switch as flow-mods and meter-mods, keeps the port queues its flows name in OVSDB, removes what
expired, and reconciles reconnecting switches.

Re-applying a decision that is in force changes nothing on the switch: its flow keeps its cookie
and counters. The flow's hard timeout (a fail-safe should the controller die) is extended only
once less than half of the decision's remaining TTL is left of it. A decision revised in its own
slot (a new rate) is modified in place.

The os-ken app (:mod:`nm_toolkit.controller.osken_app`) only forwards switch events here; this
class never imports os-ken, so its logic is testable without a switch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from nm_toolkit.config import ControllerSettings
from nm_toolkit.controller import openflow
from nm_toolkit.controller.base import ControllerAdapter, Outcome
from nm_toolkit.controller.openflow import MeterCommand
from nm_toolkit.controller.ovsdb import OvsdbQueues, QueueSyncError
from nm_toolkit.controller.state import DesiredState, Entry, Upsert, plan_entry
from nm_toolkit.schemas import Decision

log = logging.getLogger(__name__)

NO_OVSDB = "controller.queues.ovsdb is empty, so the queue this flow names cannot be created: set it to the switches' OVSDB"


class OpenFlowEngine(ControllerAdapter):
    """Desired state -> switches. Thread-safe: decisions arrive on the caller's thread, switch
    events on os-ken's."""

    name = "openflow"

    def __init__(
        self, settings: ControllerSettings, clock: Callable[[], float] = time.time, queues: OvsdbQueues | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = DesiredState()
        self.queues = queues if queues is not None or not settings.queues.ovsdb else OvsdbQueues(settings.queues)
        self._switch_until: dict[str, float] = {}  # key -> when the switches' hard timeout of its flow fires
        self.errors: deque[str] = deque(maxlen=100)
        self._datapaths: dict[int, Any] = {}
        self._pending: dict[tuple[int, int], threading.Event] = {}
        self._xid_keys: dict[tuple[int, int], str] = {}
        self._lock = threading.RLock()
        self._connected = threading.Condition(self._lock)

    # -- decisions -------------------------------------------------------------------------------
    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        """Plan every decision, create the queues their flows name (one OVSDB transaction), send
        the flows, then drop the queues no flow names any more."""
        outcomes: list[Outcome] = []
        staged: list[tuple[int, Entry, Upsert]] = []
        with self._lock:
            for decision in decisions:
                entry = plan_entry(decision, self.state, self.settings, self.clock())
                if isinstance(entry, Outcome):
                    outcomes.append(entry)
                elif entry.plan.queue is not None and self.queues is None:
                    outcomes.append(Outcome(entry.key, decision.kind, "unsupported", NO_OVSDB))
                else:
                    upsert = self.state.upsert(entry)
                    staged.append((len(outcomes), entry, upsert))
                    outcomes.append(Outcome(entry.key, decision.kind, "applied" if upsert.changed else "unchanged"))
            failure = self._sync_queues(grow=True)
            for index, entry, upsert in staged:
                self._remove(upsert.replaced)
                if failure is not None and upsert.changed and entry.plan.queue is not None:
                    self.state.remove(entry.key)  # no flow may name a queue that is not there
                    self._remove([upsert.revised] if upsert.revised is not None else [])
                    outcomes[index] = Outcome(entry.key, entry.decision.kind, "failed", failure)
                else:
                    self._install_all(entry, upsert)
            self._sync_queues()
        return outcomes

    def expire(self, now: float) -> list[str]:
        with self._lock:
            gone = self.state.expire(now)
            self._remove(gone)
            if gone:
                self._sync_queues()
        for entry in gone:
            log.info("decision %s expired and was removed", entry.key)
        return [entry.key for entry in gone]

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            gone = [entry for entry in map(self.state.remove, keys) if entry is not None]
            self._remove(gone)
            if gone:
                self._sync_queues()
        return [entry.key for entry in gone]

    def _remove(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._switch_until.pop(entry.key, None)
            self._send_all(entry.key, lambda dp, entry=entry: openflow.remove_messages(dp, entry.plan))

    def _install_all(self, entry: Entry, upsert: Upsert) -> None:
        """Send a new or revised decision's meter and flow to every switch; an unchanged one
        only when its hard timeout is due for extension."""
        now = self.clock()
        revised, meter = upsert.revised, entry.plan.meter
        command: MeterCommand = "add"
        if not upsert.changed:
            if self._switch_until.get(entry.key, 0.0) - now >= (entry.expires_at + 1 - now) / 2:
                return
            command = "keep"
        elif revised is not None and revised.plan.meter is not None and meter is not None:
            same_id = revised.plan.meter.meter_id == meter.meter_id
            command = "keep" if revised.plan.meter == meter else "modify" if same_id else "add"
        self._send_all(entry.key, lambda dp: self._install(dp, entry, command))
        if revised is not None and revised.plan.meter is not None and command == "add":
            old = revised.plan.meter.meter_id  # the flow no longer names it
            self._send_all(entry.key, lambda dp: [openflow.meter_delete(dp, old)])

    def _sync_queues(self, grow: bool = False, force: bool = False) -> str | None:
        """Make OVSDB hold the queues the desired state names (with ``grow``, also those it
        held: they go once their flows have gone). The error, if OVSDB refused."""
        if self.queues is None:
            return None
        wanted = self.state.queues()
        if grow and self.queues.synced:
            wanted = {**self.queues.synced, **wanted}
        try:
            self.queues.sync(wanted, force=force)
        except QueueSyncError as exc:
            if not wanted:  # a clean-up on (re)connect: no flow depends on it
                log.debug("queue clean-up skipped: %s", exc)
                return None
            self.errors.append(str(exc))
            log.warning("%s", exc)
            return str(exc)
        return None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every connected switch has processed everything sent to it so far: a
        barrier request each, and their replies. False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            events = [self._barrier(datapath) for datapath in self._datapaths.values()]
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in events)

    def close(self) -> None:
        """Wait (bounded) until the switches have processed what was sent: os-ken writes from a
        send queue on its own thread, so a process that exits right after a round could
        otherwise take its last flow-mods with it."""
        if not self.flush(timeout_s=5.0):
            log.warning("switches did not confirm the last OpenFlow messages within 5 s")

    def send_raw(self, datapath_id: int, messages: list[Any]) -> None:
        """Send prepared OpenFlow messages to one switch, bypassing the desired state (for
        diagnostics and the benchmark's baseline; decisions go through :meth:`apply`)."""
        with self._lock:
            self._send(self._datapaths[datapath_id], "raw", messages)

    # -- switch events (called from os-ken handlers) ---------------------------------------------
    def switch_connected(self, datapath: Any) -> None:
        """Reconcile a (re)connecting switch: wipe it, then install the whole desired state."""
        with self._lock:
            self._datapaths[datapath.id] = datapath
            self._sync_queues(force=True)  # the switch may have new ports, or a new database
            for message in openflow.reset_messages(datapath):
                datapath.send_msg(message)
            now = self.clock()
            for entry in self.state.entries():
                if entry.expires_at > now:
                    self._send(datapath, entry.key, self._install(datapath, entry, "add"))
            self._connected.notify_all()
        log.info("switch %016x connected; installed %d decisions", datapath.id, len(self.state))

    def switch_disconnected(self, datapath: Any) -> None:
        with self._lock:
            if self._datapaths.get(datapath.id) is datapath:
                del self._datapaths[datapath.id]
            for pending in [k for k in self._pending if k[0] == datapath.id]:
                self._pending.pop(pending).set()  # nobody will answer; do not make flush() wait
        log.info("switch %016x disconnected", datapath.id or 0)

    def barrier_replied(self, datapath: Any, xid: int) -> None:
        with self._lock:
            event = self._pending.pop((datapath.id, xid), None)
        if event is not None:
            event.set()

    def switch_error(self, datapath: Any, xid: int, description: str) -> None:
        with self._lock:
            key = self._xid_keys.get((datapath.id, xid), "?")
        message = f"switch {datapath.id:016x} rejected a message of decision {key}: {description}"
        self.errors.append(message)
        log.warning(message)

    def probe_switches(self) -> None:
        """Send each switch an echo request. With os-ken's native (thread) hub a connection's
        end is only noticed on the next send, so this keepalive is what makes a switch that
        died show up as disconnected within one expiry interval."""
        with self._lock:
            for datapath in self._datapaths.values():
                datapath.send_msg(openflow.echo_request(datapath))

    def wait_for_switches(self, count: int, timeout_s: float) -> bool:
        with self._connected:
            return self._connected.wait_for(lambda: len(self._datapaths) >= count, timeout_s)

    @property
    def datapath_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._datapaths)

    # -- sending ----------------------------------------------------------------------------------
    def _install(self, datapath: Any, entry: Entry, meter: MeterCommand) -> list[Any]:
        # The hard timeout is a fail-safe should the controller die: the switch drops the flow a
        # second after the TTL; normally the expiry sweep removes flow and meter first.
        self._switch_until[entry.key] = entry.expires_at + 1
        remaining = entry.expires_at - self.clock() + 1
        return openflow.install_messages(datapath, entry.plan, hard_timeout_s=remaining, meter=meter)

    def _send_all(self, key: str, build: Callable[[Any], list[Any]]) -> None:
        for datapath in self._datapaths.values():
            self._send(datapath, key, build(datapath))

    def _send(self, datapath: Any, key: str, messages: list[Any]) -> None:
        for message in messages:
            datapath.set_xid(message)
            self._xid_keys[(datapath.id, message.xid)] = key
            datapath.send_msg(message)
        if len(self._xid_keys) > 10_000:  # only recent xids matter for error reports
            for stale in list(self._xid_keys)[:5_000]:
                del self._xid_keys[stale]

    def _barrier(self, datapath: Any) -> threading.Event:
        message = openflow.barrier(datapath)
        datapath.set_xid(message)
        event = self._pending[(datapath.id, message.xid)] = threading.Event()
        datapath.send_msg(message)
        return event

