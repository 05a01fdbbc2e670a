"""A single-node Apache Kafka 4.x broker in KRaft mode, from Maven Central jars, on 127.0.0.1.

The jars are resolved once with Maven into a cache directory (``~/.cache/nm-toolkit/kafka``, or
``NMT_KAFKA_HOME``) and reused. By default each broker gets a fresh temporary data directory and
free ports, so tests and people can run several side by side; with ``data_dir`` the storage is
formatted once and then reused (same cluster id, topics, data and committed offsets) by every
later start, in this process or another, and is never deleted.
"""

from __future__ import annotations

from nm_toolkit.errors import UserError

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

KAFKA_VERSION = "4.1.1"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class KafkaProvisionError(UserError):
    """The broker could not be fetched or started; the message says what to install or check."""


def kafka_home() -> Path:
    default = Path.home() / ".cache" / "nm-toolkit" / "kafka"
    return Path(os.environ.get("NMT_KAFKA_HOME", default)) / KAFKA_VERSION


def ensure_kafka_jars(home: Path | None = None) -> Path:
    """Resolve the broker's jars with Maven unless a previous run already did; return the lib dir."""
    home = home or kafka_home()
    lib = home / "lib"
    stamp = home / ".complete"
    if stamp.is_file():
        return lib
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise KafkaProvisionError("Kafka needs Java 17+ and Maven: install them (apt-get install openjdk-17-jre-headless maven)")
    home.mkdir(parents=True, exist_ok=True)
    pom = home / "pom.xml"
    pom.write_bytes(resources.files("nm_toolkit.devtools").joinpath("kafka-pom.xml").read_bytes())
    tmp_lib = home / "lib.partial"
    shutil.rmtree(tmp_lib, ignore_errors=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp_lib}", "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaProvisionError(f"maven could not resolve Kafka {KAFKA_VERSION}: {result.stdout[-500:]}{result.stderr[-500:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp_lib.rename(lib)
    stamp.write_text(KAFKA_VERSION)
    return lib


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


_LOG4J = """\
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log_file}
appender.file.append=true
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
"""

_SERVER = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes={max_message_bytes}
auto.create.topics.enable=true
"""

_STATE_FILE = "nmt-broker.json"  # ports of a persistent broker, so a restart finds its own quorum again


@dataclass
class KafkaBroker:
    """A broker process; use as a context manager or call :meth:`start` and :meth:`stop`.

    ``data_dir``: keep the cluster there. Its storage is formatted on the first start only (when
    ``meta.properties`` is absent); later starts, by this object or a new one, reuse the cluster id,
    topics, data and committed offsets, and nothing there is ever deleted. Without it the broker
    lives in a temporary directory that :meth:`stop` removes (unless ``keep_data``).

    A broker can be started again after :meth:`stop` (clean shutdown) or :meth:`kill` (SIGKILL, as
    in a crash), on the same ports and the same data: see :meth:`restart`.

    ``max_message_bytes`` is the broker's ``message.max.bytes``: the largest record batch it
    accepts, which producers (dead-letter records with the original bytes included) must stay under.
    """

    port: int = 0
    partitions: int = 4
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    heap: str = "512m"
    work_dir: Path | None = None
    data_dir: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)
    _controller_port: int = field(default=0, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "broker.log"

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs``: topic partitions, the KRaft metadata log and ``meta.properties``."""
        if self.data_dir is not None:
            return Path(self.data_dir) / "data"
        assert self.work_dir is not None, "the broker has no directory before start()"
        return self.work_dir / "data"

    @property
    def formatted(self) -> bool:
        """Whether the storage already holds a cluster (``meta.properties`` present)."""
        return (self.data_dir is not None or self.work_dir is not None) and (self.log_dir / "meta.properties").is_file()

    @property
    def cluster_id(self) -> str | None:
        """The cluster id from ``meta.properties`` (None before the storage is formatted)."""
        if not self.formatted:
            return None
        for line in (self.log_dir / "meta.properties").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 60.0) -> KafkaBroker:
        """Start the broker (formatting its storage first if it has none) and wait until it answers."""
        if self.running:
            raise KafkaProvisionError(f"Kafka is already running on {self.bootstrap_servers}")
        lib = ensure_kafka_jars()
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir).resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.work_dir = self.work_dir or self.data_dir
        elif self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="nmt-kafka-"))
            self._own_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        config = self.work_dir / "server.properties"
        config.write_text(
            _SERVER.format(
                port=self.port,
                controller_port=self._controller_port,
                data_dir=self.log_dir,
                partitions=self.partitions,
                max_message_bytes=self.max_message_bytes,
            )
        )
        log4j = self.work_dir / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log_file=self.log_file))
        java = ["java", f"-Xmx{self.heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
        if not self.formatted:
            fmt = subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "-c", str(config), "--standalone"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise KafkaProvisionError(f"formatting Kafka storage failed: {fmt.stderr[-800:] or fmt.stdout[-800:]}")
        out = open(self.work_dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the child process
        try:
            self._process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            out.close()  # the child has its own copy
        self._wait_ready(timeout_s)
        return self

    def _choose_ports(self) -> None:
        """Keep the ports of an earlier start (of this object, or of the data dir's last broker)."""
        state_file = self.data_dir / _STATE_FILE if self.data_dir is not None else None
        saved: dict[str, int] = {}
        if state_file is not None and state_file.is_file():
            try:
                saved = {k: int(v) for k, v in json.loads(state_file.read_text()).items()}
            except (ValueError, TypeError, AttributeError):
                saved = {}
        if not self.port:
            previous = saved.get("port", 0)
            self.port = previous if previous and _port_is_free(previous) else free_port()
        if not self._controller_port:
            previous = saved.get("controller_port", 0)
            # the KRaft voter set records the controller's endpoint: reuse it where it is free
            self._controller_port = previous if previous and _port_is_free(previous) else free_port()
        if state_file is not None:
            state_file.write_text(json.dumps({"port": self.port, "controller_port": self._controller_port}))

    def _wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        # an admin client waits up to bootstrap_timeout_ms (30 s) for a broker that is not there yet:
        # look for the listener first and keep each attempt short, so a ready broker is seen at once
        short = {"bootstrap_timeout_ms": 3000} if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG else {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise KafkaProvisionError(f"Kafka exited with code {code}: {self._log_tail()} (see {self.work_dir})")
            if not _listening(self.port):
                time.sleep(0.2)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap_servers], request_timeout_ms=5000, **short)
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except (KafkaError, OSError):
                time.sleep(0.2)
        self.stop(keep_data=True)
        raise KafkaProvisionError(f"Kafka did not answer on {self.bootstrap_servers} within {timeout_s:.0f} s (see {self.work_dir})")

    def _log_tail(self, chars: int = 600) -> str:
        assert self.work_dir is not None
        for name in ("stdout.log", "broker.log"):
            path = self.work_dir / name
            if path.is_file() and path.stat().st_size:
                return " ".join(path.read_text(errors="replace")[-chars:].split())
        return "no output"

    def stop(self, timeout_s: float = 20.0, *, keep_data: bool = False) -> None:
        """Shut the broker down cleanly (SIGTERM; SIGKILL after ``timeout_s``).

        A temporary directory of its own is removed unless ``keep_data`` (then :meth:`start` brings
        the same cluster back); a ``data_dir`` is always kept.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._own_dir and not keep_data and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
            self._own_dir = False
            self._controller_port = 0

    def kill(self) -> None:
        """SIGKILL the broker, as in a crash: nothing is flushed or removed; :meth:`start` recovers it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self, *, kill: bool = False, timeout_s: float = 60.0) -> KafkaBroker:
        """Stop (or ``kill``) and start again on the same ports with the same data."""
        if kill:
            self.kill()
        else:
            self.stop(keep_data=True)
        return self.start(timeout_s)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


def _cluster_id() -> str:
    """A random Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
