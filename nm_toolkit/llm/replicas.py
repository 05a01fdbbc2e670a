"""Edge replicas that serve in this process, on its bus: what the supervisor runs where its
replicas cannot be processes of their own (``nmt demo``'s in-process bus, which another process
cannot reach). Each replica is the edge service itself, in the site's consumer group, on its own
thread; the supervisor starts, watches and stops it as it does an ``nmt llm serve`` process."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Mapping

from nm_toolkit.bus.base import Bus
from nm_toolkit.config import Settings
from nm_toolkit.llm.supervisor import Launcher

log = logging.getLogger(__name__)


def settings_with_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    """``settings`` with ``NMT_SECTION__FIELD`` values of ``env`` on top, as a replica process
    would read them (a supervisor's placed model: ``NMT_LLM__EDGE_MODEL``, ``NMT_LLM__QUANTIZE_EDGE``)."""
    sections: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        section, _, field = name.removeprefix("NMT_").lower().partition("__")
        sections.setdefault(section, {})[field] = value
    update = {
        section: type(getattr(settings, section)).model_validate(getattr(settings, section).model_dump() | fields)
        for section, fields in sections.items()
    }  # each section validated as a process reads it; the others stay as they are
    return settings.model_copy(update=update)


class ThreadReplica:
    """An edge service on a thread of this process, stopped as a process is (``send_signal``,
    ``kill``), its ``returncode`` 0 once stopped and 1 when it failed."""

    def __init__(self, settings: Settings, bus: Bus, name: str) -> None:
        self.returncode: int | None = None
        self.ready = threading.Event()  # its model is loaded and it is in the group
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(settings, bus), name=name, daemon=True)
        self._thread.start()

    def _serve(self, settings: Settings, bus: Bus) -> None:
        from nm_toolkit.bus.runtime import StreamRunner
        from nm_toolkit.llm.deployment import edge_completer
        from nm_toolkit.llm.service import edge_service

        try:
            runner = StreamRunner(bus, edge_service(settings, edge_completer(settings)))
            self.ready.set()
            while not self._stop.is_set():
                runner.step(timeout_s=0.2)
            runner.close()  # its batch finished and committed, as SIGTERM has a process do
            self.returncode = 0
        except Exception:  # noqa: BLE001 - a replica that fails exits; the supervisor starts it again
            log.exception("in-process edge replica %s failed", self._thread.name)
            self.returncode = 1
        finally:
            self.ready.set()

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self._stop.set()

    def kill(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(self._thread.name, timeout or 0.0)
        return self.returncode if self.returncode is not None else 1


def in_process_launcher(settings: Settings, bus: Bus) -> Launcher:
    """Starts replica ``i`` of the site as a :class:`ThreadReplica` on ``bus``, with the placed
    model's settings on top of ``settings``."""

    def launch(index: int, model_env: Mapping[str, str]) -> ThreadReplica:
        return ThreadReplica(settings_with_env(settings, model_env), bus, f"{settings.llm.edge_site}-{index}")

    return launch
