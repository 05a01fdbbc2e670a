"""A single-node Apache Kafka 4.x broker in KRaft mode, from Maven Central jars, on 127.0.0.1.

The jars are resolved once with Maven into a cache directory (``~/.cache/nm-toolkit/kafka``, or
``NMT_KAFKA_HOME``) and reused; each broker gets a fresh data directory and free ports, so tests
and people can run several side by side.
"""

from __future__ import annotations

from nm_toolkit.errors import UserError

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


_LOG4J = """\
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log_file}
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


@dataclass
class KafkaBroker:
    """A broker process; use as a context manager or call :meth:`start` and :meth:`stop`."""

    port: int = 0
    partitions: int = 4
    max_message_bytes: int = 4 * 1024 * 1024
    heap: str = "512m"
    work_dir: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "broker.log"

    def start(self, timeout_s: float = 60.0) -> KafkaBroker:
        lib = ensure_kafka_jars()
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="nmt-kafka-"))
            self._own_dir = True
        self.port = self.port or free_port()
        controller_port = free_port()
        config = self.work_dir / "server.properties"
        config.write_text(
            _SERVER.format(
                port=self.port,
                controller_port=controller_port,
                data_dir=self.work_dir / "data",
                partitions=self.partitions,
                max_message_bytes=self.max_message_bytes,
            )
        )
        log4j = self.work_dir / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log_file=self.log_file))
        java = ["java", f"-Xmx{self.heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
        fmt = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "-c", str(config), "--standalone"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if fmt.returncode != 0:
            raise KafkaProvisionError(f"formatting Kafka storage failed: {fmt.stderr[-800:] or fmt.stdout[-800:]}")
        out = open(self.work_dir / "stdout.log", "wb")  # noqa: SIM115 - owned by the child process
        self._process = subprocess.Popen(
            [*java, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise KafkaProvisionError(f"Kafka exited with code {self._process.returncode}; see {self.work_dir}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap_servers], request_timeout_ms=5000)
                admin.list_topics()
                admin.close()
                return
            except (KafkaError, OSError):
                time.sleep(0.5)
        self.stop()
        raise KafkaProvisionError(f"Kafka did not answer on {self.bootstrap_servers} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


def _cluster_id() -> str:
    """A random Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
