"""Real Faucet for tests and development, run the way production runs it: its own process, from
its own virtualenv.

Faucet pins ``os_ken==3.1.0`` and ``prometheus_client==0.24.1`` (the toolkit runs os-ken 4.x), so
it cannot share the toolkit's environment, and its requirements name an ``ncclient`` tarball on
GitHub. The virtualenv is built once and cached (``~/.cache/nm-toolkit/faucet-venv/<version>``, or
``NMT_FAUCET_HOME``): Faucet installed with ``--no-deps``, then its dependencies as listed below,
with ``ncclient`` from PyPI. :class:`FaucetProcess` starts ``faucet`` from it on a private
OpenFlow port with its logs, Prometheus port and configuration in one directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from nm_toolkit.devtools.kafka import _listening, free_port
from nm_toolkit.errors import UserError

FAUCET_VERSION = "1.10.12"
# Faucet 1.10.12's requirements.txt, with ncclient from PyPI instead of its GitHub tarball.
REQUIREMENTS = [
    "ncclient", "chewie==0.0.25", "eventlet>=0.34.3", "networkx>=1.9", "pbr>=1.9", "prometheus_client==0.24.1",
    "ruamel.yaml==0.18.16", "os_ken==3.1.0", "beka==0.4.2", "pytricia>=1.0.0",
]  # fmt: skip


class FaucetProvisionError(UserError):
    """Faucet's virtualenv could not be built or Faucet did not start; the message says why."""


def faucet_home() -> Path:
    default = Path.home() / ".cache" / "nm-toolkit" / "faucet-venv"
    return Path(os.environ.get("NMT_FAUCET_HOME", default)) / FAUCET_VERSION


def ensure_faucet_venv(home: Path | None = None) -> Path:
    """Build Faucet's virtualenv unless an earlier run did; return its ``bin`` directory. A
    virtualenv cannot be moved, so it is built in place under a lock, and marked complete last."""
    home = home or faucet_home()
    bin_dir, stamp = home / "bin", home / ".complete"
    if stamp.is_file():
        return bin_dir
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f".{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if stamp.is_file():
            return bin_dir
        shutil.rmtree(home, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(home)],
            [str(bin_dir / "pip"), "install", "-q", "--no-deps", f"faucet=={FAUCET_VERSION}"],
            [str(bin_dir / "pip"), "install", "-q", *REQUIREMENTS],
            [str(bin_dir / "pip"), "check"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0:
                raise FaucetProvisionError(
                    f"building Faucet {FAUCET_VERSION}'s virtualenv failed at `{' '.join(step[:4])}` "
                    f"(is PyPI reachable?): {(done.stdout + done.stderr)[-800:]}"
                )
        stamp.write_text(FAUCET_VERSION)
    return bin_dir


class FaucetProcess:
    """``faucet`` on 127.0.0.1:``port`` with ``config`` (its main YAML); it reads the file again
    by itself when it (or a file it includes) changes."""

    def __init__(self, config: Path, work_dir: Path, port: int | None = None, bin_dir: Path | None = None) -> None:
        self.config = config
        self.work_dir = work_dir
        self.port = port
        self.bin_dir = bin_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.work_dir / "faucet.log"

    def start(self, timeout_s: float = 120.0) -> Self:
        bin_dir = self.bin_dir or ensure_faucet_venv()
        self.port = self.port or free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # faucet execs osken-manager from PATH
            "FAUCET_CONFIG": str(self.config),
            "FAUCET_CONFIG_STAT_RELOAD": "1",
            "FAUCET_LOG": str(self.log_file),
            "FAUCET_EXCEPTION_LOG": str(self.work_dir / "faucet_exception.log"),
            "FAUCET_PROMETHEUS_ADDR": "127.0.0.1",
            "FAUCET_PROMETHEUS_PORT": str(free_port()),
        }
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "OSKEN_HUB_TYPE"):  # the toolkit's, not Faucet's: os-ken 3.1 needs eventlet
            env.pop(name, None)
        argv = [str(bin_dir / "faucet"), "--ryu-ofp-listen-host=127.0.0.1", f"--ryu-ofp-tcp-listen-port={self.port}"]
        with open(self.work_dir / "faucet.stderr", "wb") as stderr:
            self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout_s
        while not _listening(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise FaucetProvisionError(f"Faucet did not listen on port {self.port}: {self.log_tail()}")
            time.sleep(0.2)
        return self

    def reload(self) -> None:
        """Ask Faucet to read its configuration again now (SIGHUP)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def log_tail(self, chars: int = 1500) -> str:
        parts = [path.read_text(errors="replace")[-chars:] for path in (self.log_file, self.work_dir / "faucet.stderr") if path.is_file()]
        return "\n".join(parts)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
