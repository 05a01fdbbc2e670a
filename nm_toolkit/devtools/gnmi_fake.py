"""openconfig's fake gNMI target and its ``gnmi_cli``, built with Go, for tests and development.

Both come from ``github.com/openconfig/gnmi`` on the Go module proxy, built once with ``go install``
into a cache directory (``~/.cache/nm-toolkit/gnmi``, or ``NMT_GNMI_HOME``) and reused. The fake
target (``testing/fake/gnmi/cmd/fake_server``) streams a fixed list of ``SubscribeResponse``
messages to every subscriber, whatever mode it asks for, then either ends the stream or holds it
open; it serves TLS only, so a self-signed certificate for 127.0.0.1 is made for it.

Note that the fake binds ``:port`` (every interface): its code allows no other address. Clients
here only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from google.protobuf import text_format
from pygnmi.spec.v080 import gnmi_pb2

from nm_toolkit.devtools.kafka import _listening, free_port
from nm_toolkit.errors import UserError

GNMI_MODULE = "github.com/openconfig/gnmi"
GNMI_VERSION = "v0.14.1"
TOOLS = {"fake_server": "testing/fake/gnmi/cmd/fake_server", "gnmi_cli": "cmd/gnmi_cli"}
GO_HINT = "install Go 1.22 or newer (apt-get install golang-go, or the go toolchain) so `go` is on PATH"


class GnmiProvisionError(UserError):
    """The gNMI tools could not be built or started; the message says what to install or check."""


def gnmi_home() -> Path:
    default = Path.home() / ".cache" / "nm-toolkit" / "gnmi"
    return Path(os.environ.get("NMT_GNMI_HOME", default)) / GNMI_VERSION


def go_binary() -> str | None:
    """The Go toolchain: on PATH, or where the official tarball installs it."""
    return shutil.which("go") or next((str(p) for p in [Path("/usr/local/go/bin/go")] if p.is_file()), None)


def ensure_gnmi_tools(home: Path | None = None) -> Path:
    """Build ``fake_server`` and ``gnmi_cli`` unless an earlier run did; return their directory."""
    home = home or gnmi_home()
    bin_dir = home / "bin"
    if all((bin_dir / tool).is_file() for tool in TOOLS):
        return bin_dir
    go = go_binary()
    if go is None:
        raise GnmiProvisionError(f"building openconfig's fake gNMI target needs Go: {GO_HINT}")
    partial = home / "bin.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = {**os.environ, "GOBIN": str(partial), "GOFLAGS": "-mod=mod"}
    packages = [f"{GNMI_MODULE}/{path}@{GNMI_VERSION}" for path in TOOLS.values()]
    result = subprocess.run([go, "install", *packages], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise GnmiProvisionError(
            f"go install of {GNMI_MODULE}@{GNMI_VERSION} failed (is the Go module proxy reachable?): {result.stderr[-800:]}"
        )
    shutil.rmtree(bin_dir, ignore_errors=True)
    partial.rename(bin_dir)
    return bin_dir


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (and ``localhost``) and its key, as PEM files: the
    certificate is also the CA a client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "target.crt", directory / "target.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


CounterReadings = Mapping[str, Mapping[str, int]]  # interface -> counter name -> cumulative value


def counter_notifications(readings: Iterable[tuple[int, CounterReadings]]) -> list[gnmi_pb2.SubscribeResponse]:
    """OpenConfig interface counter notifications, one per ``(timestamp_ns, readings)``, with the
    interface in the prefix and one update per counter, as devices send them."""
    responses = []
    for ts_ns, interfaces in readings:
        for interface, counters in interfaces.items():
            prefix = gnmi_pb2.Path(
                elem=[
                    gnmi_pb2.PathElem(name="interfaces"),
                    gnmi_pb2.PathElem(name="interface", key={"name": interface}),
                    gnmi_pb2.PathElem(name="state"),
                    gnmi_pb2.PathElem(name="counters"),
                ]
            )
            updates = [
                gnmi_pb2.Update(path=gnmi_pb2.Path(elem=[gnmi_pb2.PathElem(name=c)]), val=gnmi_pb2.TypedValue(uint_val=v))
                for c, v in counters.items()
            ]
            notification = gnmi_pb2.Notification(timestamp=ts_ns, prefix=prefix, update=updates)
            responses.append(gnmi_pb2.SubscribeResponse(update=notification))
    return responses


def fake_config(target: str, responses: Sequence[gnmi_pb2.SubscribeResponse], hold_open: bool = True) -> str:
    """The fake target's configuration (``gnmi.fake.Config`` as text): stream ``responses`` then
    a sync response, then hold the stream open (``hold_open``) or end it."""
    body = "".join(f"  responses {{\n{text_format.MessageToString(r, indent=4)}  }}\n" for r in responses)
    return (
        f'target: "{target}"\nclient_type: GRPC_GNMI\n'
        f"disable_eof: {str(hold_open).lower()}\nfixed {{\n{body}}}\n"
    )


class FakeGnmiTarget:
    """One fake gNMI target process on 127.0.0.1; ``with FakeGnmiTarget("r1", responses) as t:``.

    :meth:`stop` ends it as a device that goes away would (SIGKILL: its streams break), and
    :meth:`start` brings it back on the same port, optionally with new ``responses`` (a device that
    rebooted, say, and counts from zero again).
    """

    def __init__(
        self,
        target: str,
        responses: Sequence[gnmi_pb2.SubscribeResponse],
        *,
        hold_open: bool = True,
        port: int = 0,
        work_dir: Path | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.target = target
        self.responses = list(responses)
        self.hold_open = hold_open
        self.port = port
        self.work_dir = work_dir
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._own_dir = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        assert self.work_dir is not None, "the target has no certificate before start()"
        return self.work_dir / "target.crt"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, responses: Sequence[gnmi_pb2.SubscribeResponse] | None = None) -> Self:
        """Start (or start again, on the same port) and wait until the port accepts connections."""
        if self.running:
            raise GnmiProvisionError(f"the fake gNMI target {self.target} already runs on {self.address}")
        if responses is not None:
            self.responses = list(responses)
        bin_dir = ensure_gnmi_tools()
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="nmt-gnmi-"))
            self._own_dir = True
        if not self.ca_cert.is_file():
            self_signed_certificate(self.work_dir)
        self.port = self.port or free_port()
        config = self.work_dir / "config.pb.txt"
        config.write_text(fake_config(self.target, self.responses, self.hold_open))
        cmd = [
            str(bin_dir / "fake_server"), "--config", str(config), "--text", "--port", str(self.port),
            "--server_crt", str(self.ca_cert), "--server_key", str(self.work_dir / "target.key"),
            "--allow_no_client_auth", "--logtostderr",
        ]  # fmt: skip
        with open(self.work_dir / "fake_server.log", "ab") as log:
            self._process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.work_dir / "fake_server.log").read_text(errors="replace")[-800:]
                raise GnmiProvisionError(f"the fake gNMI target did not start on {self.address}: {tail}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Kill the target: its open streams break, as when a device goes away."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None

    def gnmi_cli(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run openconfig's ``gnmi_cli`` against this target (TLS, trusting its certificate);
        return its standard output."""
        cli = ensure_gnmi_tools() / "gnmi_cli"
        cmd = [str(cli), "-address", self.address, "-ca_crt", str(self.ca_cert), "-target", self.target, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise GnmiProvisionError(f"gnmi_cli failed ({result.returncode}): {result.stderr[-800:]}")
        return result.stdout

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
