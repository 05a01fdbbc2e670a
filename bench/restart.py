"""Restart to first commit: how long a SIGKILLed collector's partitions stand still.

    python bench/restart.py [--repeat 3]

A local Kafka broker, a telemetry topic that keeps receiving records, and one ``nmt collect run``
process. Once it has committed, it is SIGKILLed and started again; the figure is the time from the
restart to the group's next commit. Printed for dynamic membership (the new member waits for the
dead one's session to time out, ``bus.session_timeout_ms``) and for static membership
(``bus.group_instance_id``: the restarted member takes its partitions back at once), next to the
baseline of the same run: the time ``nmt collect run --help`` takes to start.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaAdminClient
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nm_toolkit.bus.kafka import KafkaBus  # noqa: E402
from nm_toolkit.devtools.kafka import KafkaBroker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def committed(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        return sum(o.offset for o in admin.list_group_offsets(group).get(group, {}).values())
    except Exception:  # noqa: BLE001 - the group does not exist yet
        return 0
    finally:
        admin.close()


def wait_for_commit_past(bootstrap: str, group: str, floor: int, timeout_s: float = 120.0) -> float:
    start = time.monotonic()
    while committed(bootstrap, group) <= floor:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no commit past {floor} within {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - start


def one_restart(bootstrap: str, tmp: Path, static: bool) -> float:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"{tag}.telemetry", f"collector-{tag}"
    bus = KafkaBus(bootstrap)
    bus.create_topics([topic], partitions=4)
    stop = threading.Event()

    def produce() -> None:
        producer = bus.producer()
        i = 0
        while not stop.is_set():
            for s in range(8):
                record = {"ts": 1_700_000_000 + i, "source": f"cell-{s}", "metric": "m", "value": 1.0}
                producer.send(topic, orjson.dumps(record), f"cell-{s}".encode())
            producer.flush()
            i += 1
            time.sleep(0.02)
        producer.close()

    env = {
        **os.environ, "PYTHONPATH": str(REPO), "NMT_BUS__KIND": "kafka", "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
        "NMT_STATE_DIR": str(tmp / tag), "NMT_TOPICS__TELEMETRY": topic, "NMT_TOPICS__SERIES": f"{tag}.series",
        "NMT_COLLECTOR__GROUP_ID": group, "NMT_COLLECTOR__WINDOW_SECONDS": "60",
        **({"NMT_BUS__GROUP_INSTANCE_ID": f"bench-{tag}"} if static else {}),
    }  # fmt: skip
    argv = [sys.executable, "-m", "nm_toolkit", "collect", "run", "--json"]
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_commit_past(bootstrap, group, 0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = committed(bootstrap, group)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wait_for_commit_past(bootstrap, group, at_kill)
    finally:
        stop.set()
        second.terminate()
        second.wait(60)
        producer.join(10)


def startup_seconds() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "nm_toolkit", "collect", "run", "--help"], capture_output=True, check=True, cwd=REPO)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with KafkaBroker(partitions=4) as broker:
        tmp = Path(broker.work_dir or "/tmp")
        rows = {
            "baseline: `nmt collect run --help` start-up": [startup_seconds() for _ in range(args.repeat)],
            "restart to first commit, dynamic membership": [one_restart(broker.bootstrap_servers, tmp, False) for _ in range(args.repeat)],
            "restart to first commit, static membership (bus.group_instance_id)": [
                one_restart(broker.bootstrap_servers, tmp, True) for _ in range(args.repeat)
            ],
        }
    summary = {name: {"median_s": statistics.median(v), "max_s": max(v), "runs": len(v)} for name, v in rows.items()}
    if args.json:
        print(orjson.dumps(summary | {"cpus": os.cpu_count()}).decode())
        return
    table = Table(title=f"restart to first commit ({os.cpu_count()} CPUs, session timeout 6 s)")
    for column in ("measure", "median s", "max s", "runs"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for name, row in summary.items():
        table.add_row(name, f"{row['median_s']:.2f}", f"{row['max_s']:.2f}", str(row["runs"]))
    Console().print(table)


if __name__ == "__main__":
    main()
