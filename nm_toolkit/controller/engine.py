"""The OpenFlow side of the controller: keeps the desired state and pushes it to every connected
switch as flow-mods and meter-mods, removes what expired, and reconciles reconnecting switches.

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
from nm_toolkit.controller.state import DesiredState, Entry, plan_entry
from nm_toolkit.schemas import Decision

log = logging.getLogger(__name__)


class OpenFlowEngine(ControllerAdapter):
    """Desired state -> switches. Thread-safe: decisions arrive on the caller's thread, switch
    events on os-ken's."""

    name = "openflow"

    def __init__(self, settings: ControllerSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.state = DesiredState()
        self.errors: deque[str] = deque(maxlen=100)
        self._datapaths: dict[int, Any] = {}
        self._pending: dict[tuple[int, int], threading.Event] = {}
        self._xid_keys: dict[tuple[int, int], str] = {}
        self._lock = threading.RLock()
        self._connected = threading.Condition(self._lock)

    # -- decisions -------------------------------------------------------------------------------
    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._lock:
            for decision in decisions:
                outcomes.append(self._apply_one(decision))
        return outcomes

    def _apply_one(self, decision: Decision) -> Outcome:
        entry = plan_entry(decision, self.state, self.settings, self.clock())
        if isinstance(entry, Outcome):
            return entry
        key, kind = entry.key, decision.kind
        upsert = self.state.upsert(entry)
        self._remove(upsert.replaced)
        # Re-sending an unchanged flow restarts its hard timeout (the TTL refresh); the meter stays.
        self._send_all(key, lambda dp: self._install(dp, entry, with_meter=upsert.changed))
        return Outcome(key, kind, "applied" if upsert.changed else "unchanged")

    def expire(self, now: float) -> list[str]:
        with self._lock:
            gone = self.state.expire(now)
            self._remove(gone)
        for entry in gone:
            log.info("decision %s expired and was removed", entry.key)
        return [entry.key for entry in gone]

    def withdraw(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            gone = [entry for entry in map(self.state.remove, keys) if entry is not None]
            self._remove(gone)
        return [entry.key for entry in gone]

    def _remove(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._send_all(entry.key, lambda dp, entry=entry: openflow.remove_messages(dp, entry.plan))

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
            for message in openflow.reset_messages(datapath):
                datapath.send_msg(message)
            now = self.clock()
            for entry in self.state.entries():
                if entry.expires_at > now:
                    self._send(datapath, entry.key, self._install(datapath, entry, with_meter=True))
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
    def _install(self, datapath: Any, entry: Entry, with_meter: bool) -> list[Any]:
        # The hard timeout is a fail-safe should the controller die: the switch drops the flow a
        # second after the TTL; normally the expiry sweep removes flow and meter first.
        remaining = entry.expires_at - self.clock() + 1
        return openflow.install_messages(datapath, entry.plan, hard_timeout_s=remaining, with_meter=with_meter)

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

