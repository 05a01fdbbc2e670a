"""The os-ken OpenFlow 1.3 application: small event handlers that hand switch events to the
:class:`~nm_toolkit.controller.engine.OpenFlowEngine`, plus the TTL expiry loop."""

from __future__ import annotations

from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from nm_toolkit.controller.engine import OpenFlowEngine


class DecisionSwitchApp(app_manager.OSKenApp):
    """Applies the engine's desired state to every switch that connects (OpenFlow 1.3 only)."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, engine: OpenFlowEngine, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine

    def start(self) -> Any:
        thread = super().start()
        self.threads.append(hub.spawn(self._expiry_loop))
        return thread

    def _expiry_loop(self) -> None:
        interval = self.engine.settings.expiry_interval_seconds
        while self.is_active:
            self.engine.expire(self.engine.clock())
            self.engine.probe_switches()
            hub.sleep(interval)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_switch_features(self, ev: Any) -> None:
        self.engine.switch_connected(ev.msg.datapath)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def on_state_change(self, ev: Any) -> None:
        if ev.state == DEAD_DISPATCHER and ev.datapath.id is not None:
            self.engine.switch_disconnected(ev.datapath)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier_reply(self, ev: Any) -> None:
        self.engine.barrier_replied(ev.msg.datapath, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def on_error(self, ev: Any) -> None:
        msg = ev.msg
        self.engine.switch_error(msg.datapath, msg.xid, f"OpenFlow error type={msg.type} code={msg.code}")
