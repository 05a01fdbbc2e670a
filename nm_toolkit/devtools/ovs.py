"""A private Open vSwitch (Debian's ``openvswitch-switch``) for tests and development.

Its own ``ovsdb-server`` and ``ovs-vswitchd`` run as child processes with database, sockets and
logs in one temporary directory, so several can run side by side and none touches a system OVS.
Bridges use the userspace datapath (``datapath_type=netdev``): no kernel module, no root-only
setup beyond the package itself. Meters with DROP bands work on that datapath. QoS and queue
rows are configured on its ports (``qos/show`` lists them, ``tc`` shows the HTB on the port's tap
device), but the userspace datapath writes packets into the tap device, past that qdisc, so it
does not enforce them: queues need the kernel datapath (or DPDK's egress policer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from nm_toolkit.errors import UserError

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
INSTALL_HINT = "install it with: apt-get update && apt-get install -y openvswitch-switch"


class OvsNotInstalledError(UserError):
    """The Open vSwitch binaries are missing."""


def ovs_available() -> bool:
    return all(shutil.which(tool) for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl"))


class OpenVSwitch:
    """One private OVS instance; ``with OpenVSwitch() as ovs: ovs.add_bridge("br0", ...)``."""

    def __init__(self, work_dir: Path | None = None, start_timeout_s: float = 20.0) -> None:
        self.work_dir = work_dir
        self.start_timeout_s = start_timeout_s
        self._procs: list[subprocess.Popen[bytes]] = []
        self._owns_dir = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        if not ovs_available() or not SCHEMA.is_file():
            raise OvsNotInstalledError(f"Open vSwitch is not installed; {INSTALL_HINT}")
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="nmt-ovs-"))
            self._owns_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        db = self.work_dir / "conf.db"
        if not db.exists():
            subprocess.run(["ovsdb-tool", "create", str(db), str(SCHEMA)], check=True, capture_output=True)
        self._spawn(
            "ovsdb-server", str(db), f"--remote=punix:{self.db_socket}",
            f"--unixctl={self.work_dir / 'ovsdb-server.ctl'}", f"--log-file={self.work_dir / 'ovsdb-server.log'}",
        )
        self._wait_for(self.db_socket)
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()
        return self

    def start_vswitchd(self) -> None:
        """(Re)start the switch daemon; bridges and controllers persist in the database."""
        assert self.work_dir is not None
        ctl = self.work_dir / "ovs-vswitchd.ctl"
        ctl.unlink(missing_ok=True)  # a killed daemon leaves its socket behind
        self._spawn(
            "ovs-vswitchd", f"unix:{self.db_socket}", f"--unixctl={ctl}",
            f"--log-file={self.work_dir / 'ovs-vswitchd.log'}",
        )
        self._wait_for(ctl)

    def stop_vswitchd(self) -> None:
        """Kill the switch daemon only: its OpenFlow connections drop, its flows are gone."""
        for proc in [p for p in self._procs if Path(p.args[0]).name == "ovs-vswitchd"]:  # type: ignore[index]
            self._terminate(proc)
            self._procs.remove(proc)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            self._terminate(proc)
        self._procs.clear()
        if self._owns_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- configuration -----------------------------------------------------------------------
    @property
    def db_socket(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "db.sock"

    def add_bridge(
        self, name: str, controller: str | None = None, ports: int = 0, datapath_id: int | None = None
    ) -> str:
        """Create a userspace OpenFlow 1.3 bridge (secure fail mode: no flows without the
        controller) with ``ports`` internal ports; returns its management socket path."""
        pinned = [] if datapath_id is None else [f"other-config:datapath-id={datapath_id:016x}"]
        self.vsctl(
            "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev",
            "protocols=OpenFlow13", "fail_mode=secure", *pinned,
        )
        for index in range(1, ports + 1):
            port = f"{name}-p{index}"
            self.vsctl("add-port", name, port, "--", "set", "interface", port, "type=internal", f"ofport_request={index}")
        if controller:
            self.set_controller(name, controller)
        return str(self.mgmt_socket(name))

    def link_up(self, port: str) -> None:
        """Bring an internal port's tap device up: while it is down OVS drops what it sends there,
        and the port's link is down to the controller."""
        subprocess.run(["ip", "link", "set", port, "up"], check=True, capture_output=True, timeout=30)

    def set_controller(self, bridge: str, target: str) -> None:
        """Point ``bridge`` at ``tcp:HOST:PORT``. Flows stay while it has any controller
        (``del-controller`` on a fail-secure bridge would flush them)."""
        self.vsctl("set-controller", bridge, target)
        # Reconnect fast after a controller restart: tests and operators both want that.
        self.vsctl("set", "controller", bridge, "max_backoff=1000", "inactivity_probe=5000")

    def mgmt_socket(self, bridge: str) -> Path:
        assert self.work_dir is not None
        return self.work_dir / f"{bridge}.mgmt"

    def datapath_id(self, bridge: str) -> int:
        return int(self.vsctl("get", "bridge", bridge, "datapath_id").strip().strip('"'), 16)

    # -- inspection --------------------------------------------------------------------------
    def dump_flows(self, bridge: str) -> list[str]:
        """Flow entries as ``ovs-ofctl -O OpenFlow13 dump-flows`` prints them (without stats)."""
        out = self.ofctl("dump-flows", bridge, "--no-stats")
        return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]

    def dump_meters(self, bridge: str) -> dict[int, str]:
        """Meter id -> its configuration line, from ``dump-meters``."""
        out = self.ofctl("dump-meters", bridge)
        meters: dict[int, str] = {}
        current: int | None = None
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("meter="):
                current = int(line.split()[0].split("=")[1])
                meters[current] = line
            elif current is not None and line and "reply" not in line:
                meters[current] += " " + line
        return meters

    def qos_show(self, port: str) -> dict[int, dict[str, str]]:
        """Queue id -> its settings as ``ovs-vswitchd`` applied them to ``port`` (``ovs-appctl
        qos/show``; the default queue is 0); empty when the port has no QoS."""
        assert self.work_dir is not None
        argv = ["ovs-appctl", "-t", str(self.work_dir / "ovs-vswitchd.ctl"), "qos/show", port]
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=30, check=False)
        queues: dict[int, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            if line.startswith(("Default:", "Queue ")):
                queue_id = 0 if line.startswith("Default:") else int(line.split()[1].rstrip(":"))
                current = queues[queue_id] = {}
            elif current is not None and ":" in line:
                name, _, value = line.strip().partition(":")
                current[name] = value.strip()
        return queues

    def rows(self, table: str) -> list[str]:
        """The uuids of ``table``'s rows (``QoS``, ``Queue``, ...)."""
        return self.vsctl("--bare", "--columns=_uuid", "list", table).split()

    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", f"--db=unix:{self.db_socket}", "--timeout=10", *args])

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        return self._run(["ovs-ofctl", "-O", "OpenFlow13", command, str(self.mgmt_socket(bridge)), *args])

    # -- helpers -----------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        assert self.work_dir is not None
        env = dict(os.environ)
        for name in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
            env[name] = str(self.work_dir)
        return env

    def _run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
        return done.stdout

    def _spawn(self, *argv: str) -> None:
        assert self.work_dir is not None
        pidfile = self.work_dir / f"{argv[0]}.pid"
        proc = subprocess.Popen(
            [*argv, f"--pidfile={pidfile}"], env=self._env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._procs.append(proc)

    def _wait_for(self, path: Path) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not path.exists():
            dead = [p for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Open vSwitch did not start (no {path.name}); see logs in {self.work_dir}")
            time.sleep(0.02)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
