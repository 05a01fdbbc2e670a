"""Edge and cloud compute scaling and model placement carried out: a supervisor runs as many
edge-service (or, for the cloud site, cloud-service) processes as the latest ``scale_compute``
decision for its site asks, on the edge model the latest
``place_model`` decision chose (a new model: every replica is restarted on it, one at a time).

The autoscaling policy (:mod:`policies.autoscale`) forecasts each site's prompt rate and publishes
``scale_compute`` decisions on the decisions topic, for any orchestrator to carry out; on one
machine this is that orchestrator. Replicas are ``nmt llm serve`` processes in the site's one
consumer group, so the scale-out is Kafka's partition assignment; each runs as a static member
(``bus.group_instance_id`` = ``SITE-i``), so its transactional id survives a restart and a
replaced replica aborts its predecessor's open transaction at once. A replica that exits on its
own (a crash, a fault it cannot survive) is started again; the supervisor stops its replicas
(SIGTERM: they finish their batch and commit) when it stops.

:func:`reconcile` is the pure part: which replica indexes to start and stop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from nm_toolkit.bus.base import Message
from nm_toolkit.bus.runtime import Emitter, Progress, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.llm.placement import live_decisions
from nm_toolkit.schemas import PlaceModel, ScaleCompute

log = logging.getLogger(__name__)



class Replica(Protocol):
    """A running replica as the supervisor handles it: a :class:`subprocess.Popen` (``nmt llm
    serve``), or one that serves in this process (:mod:`nm_toolkit.llm.replicas`)."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


Launcher = Callable[[int, Mapping[str, str]], Replica]  # (replica index, extra environment)


def reconcile(running: Sequence[int], desired: int) -> tuple[list[int], list[int]]:
    """(indexes to start, indexes to stop) so that replicas ``0 .. desired-1`` run."""
    have = set(running)
    return [i for i in range(desired) if i not in have], sorted(i for i in have if i >= desired)


@dataclass
class SupervisorStats:
    desired_replicas: int = 0
    running_replicas: int = 0
    started: int = 0
    stopped: int = 0
    restarted: int = 0
    decisions_applied: int = 0
    model_changes: int = 0


class EdgeSupervisor(StreamService):
    """Keeps ``replicas`` edge-service processes of one site running, as decisions say."""

    name = "edge-supervisor"

    def __init__(
        self,
        launcher: Launcher,
        *,
        site: str,
        decisions_topic: str,
        group_id: str,
        dead_letter_topic: str,
        initial_replicas: int = 1,
        max_replicas: int = 4,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.launcher = launcher
        self.site = site
        self.decisions = Topic(decisions_topic, table=True)  # the latest decision in force survives a restart
        self.inputs = [self.decisions]
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.max_replicas = max_replicas
        self.stop_timeout_s = stop_timeout_s
        self.counters = SupervisorStats(desired_replicas=min(initial_replicas, max_replicas))
        self._processes: dict[int, Replica] = {}
        self._latest: datetime | None = None
        self._latest_model: datetime | None = None
        self.model_env: dict[str, str] = {}  # the placed model, as the replicas' settings

    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Take the newest unexpired scale_compute and place_model decisions for this site (dry
        runs are not carried out); a new model restarts the running replicas on it."""
        for decision, _ in live_decisions(messages, out, ScaleCompute, self.site):
            if self._latest is not None and decision.created_at <= self._latest:
                continue
            self._latest = decision.created_at
            self.counters.desired_replicas = min(decision.replicas, self.max_replicas)
            self.counters.decisions_applied += 1
            log.info("%s: %d edge replicas (%s)", self.site, self.counters.desired_replicas, decision.reason)
        for placed, _ in live_decisions(messages, out, PlaceModel, self.site):
            if self._latest_model is not None and placed.created_at <= self._latest_model:
                continue
            self._latest_model = placed.created_at
            env = {"NMT_LLM__EDGE_MODEL": placed.model, "NMT_LLM__QUANTIZE_EDGE": "true" if placed.quantize else "false"}
            self.counters.decisions_applied += 1
            if env != self.model_env:
                self.model_env = env
                self.counters.model_changes += 1
                log.info("%s: edge model %s%s (%s)", self.site, placed.model, " int8" if placed.quantize else "", placed.reason)
                self._restart(list(self._processes))

    def _restart(self, indexes: Sequence[int]) -> None:
        """Replace replicas one at a time, so the site keeps serving while the model changes."""
        for index in indexes:
            self._stop([index])
            self._processes[index] = self.launcher(index, self.model_env)
            self.counters.started += 1
        self.counters.running_replicas = len(self._processes)

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """Start and stop replicas to match the decision; start again any that exited."""
        for index, process in list(self._processes.items()):
            if process.poll() is not None:
                log.warning("%s: edge replica %d exited with %s; starting it again", self.site, index, process.returncode)
                del self._processes[index]
                self.counters.restarted += 1
        start, stop = reconcile(list(self._processes), 0 if final else self.counters.desired_replicas)
        self._stop(stop)
        for index in start:
            self._processes[index] = self.launcher(index, self.model_env)
            self.counters.started += 1
        self.counters.running_replicas = len(self._processes)
        return False

    @property
    def replicas(self) -> list[Replica]:
        """The replicas running now, by index."""
        return [self._processes[i] for i in sorted(self._processes)]

    def close(self) -> None:
        """Stop every replica (SIGTERM: each finishes its batch and commits)."""
        self._stop(list(self._processes))

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)

    def _stop(self, indexes: Sequence[int]) -> None:
        stopping = [self._processes.pop(i) for i in indexes]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for process in stopping:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.counters.stopped += 1
        self.counters.running_replicas = len(self._processes)


def replica_launcher(settings: Settings, extra_env: Mapping[str, str] | None = None, cloud: bool = False) -> Launcher:
    """Starts replica ``i`` (``nmt llm serve``, or ``nmt llm cloud`` with ``cloud``) of the site as
    static member ``SITE-i``, with this process's environment (so the replica reads the same
    settings) plus ``extra_env``."""
    site = settings.llm.cloud_site if cloud else settings.llm.edge_site
    command = "cloud" if cloud else "serve"

    def launch(index: int, model_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, **(extra_env or {}), **model_env, "NMT_BUS__GROUP_INSTANCE_ID": f"{site}-{index}"}
        return subprocess.Popen([sys.executable, "-m", "nm_toolkit", "llm", command], env=env, stdout=subprocess.DEVNULL)

    return launch


def edge_supervisor(settings: Settings, launcher: Launcher | None = None, cloud: bool = False) -> EdgeSupervisor:
    """The supervisor of this site's edge replicas the settings describe; with ``cloud``, of the
    cloud service's replicas (``llm.cloud_site``, as the ``cloud_autoscale`` policy's
    ``scale_compute`` decisions say; a ``place_model`` names edge sites only)."""
    cfg = settings.llm
    return EdgeSupervisor(
        launcher or replica_launcher(settings, cloud=cloud),
        site=cfg.cloud_site if cloud else cfg.edge_site,
        decisions_topic=settings.topics.decisions,
        group_id=f"{cfg.cloud_group_id if cloud else cfg.group_id}-supervisor",
        dead_letter_topic=settings.dead_letter_topics()["supervisor"],
        initial_replicas=cfg.initial_replicas,
        max_replicas=cfg.max_replicas,
    )
