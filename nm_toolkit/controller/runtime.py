"""Start the os-ken OpenFlow controller inside this process, on daemon threads.

os-ken keeps its configuration and app manager in process-wide singletons, so one process runs
at most one controller; :func:`start_openflow_controller` refuses a second one with a clear error.
Running on daemon threads lets the process (a CLI command, a test session) exit when it is done.
"""

from __future__ import annotations

import os

os.environ.setdefault("OSKEN_HUB_TYPE", "native")  # plain threads, no eventlet monkey-patching

import threading  # noqa: E402

from nm_toolkit.config import ControllerSettings  # noqa: E402
from nm_toolkit.controller.engine import OpenFlowEngine  # noqa: E402
from nm_toolkit.errors import UserError  # noqa: E402

_started: list[OpenFlowEngine] = []
_lock = threading.Lock()


class ControllerAlreadyRunning(UserError):
    """os-ken allows one controller per process."""


def start_openflow_controller(settings: ControllerSettings, engine: OpenFlowEngine | None = None) -> OpenFlowEngine:
    """Listen for OpenFlow 1.3 switches on ``listen_host:listen_port`` and return the engine
    that decisions are applied through."""
    with _lock:
        if _started:
            raise ControllerAlreadyRunning(
                "an OpenFlow controller already runs in this process; run one `nmt controller run` per process"
            )
        from os_ken import cfg
        from os_ken.base.app_manager import AppManager

        engine = engine or OpenFlowEngine(settings)
        cfg.CONF(
            args=["--ofp-listen-host", settings.listen_host, "--ofp-tcp-listen-port", str(settings.listen_port)],
            project="os_ken",
        )
        ready = threading.Event()

        def run() -> None:
            # Threads os-ken spawns from this daemon thread are daemons too.
            manager = AppManager.get_instance()
            manager.load_apps(["os_ken.controller.ofp_handler", "nm_toolkit.controller.osken_app"])
            contexts = manager.create_contexts()
            manager.instantiate_apps(engine=engine, **contexts)
            ready.set()

        threading.Thread(target=run, name="os-ken", daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("os-ken did not start within 30 s")
        _started.append(engine)
        return engine
