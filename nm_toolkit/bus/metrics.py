"""Prometheus metrics of a running stream service, read from its runner at scrape time.

Nothing is counted twice: the runner and the service keep their own counters (which tests and the
CLI's summaries read too), and a custom collector turns them into metric families when Prometheus
scrapes, so the hot path never touches a metrics library.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from nm_toolkit.bus.runtime import StreamRunner

log = logging.getLogger(__name__)

BATCH_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
_COUNTERS = {
    "messages": "Messages handled",
    "dead_letters": "Messages sent to the dead-letter topic",
    "batches": "Batches handled",
    "commits": "Offset commits",
    "commits_lost_to_rebalance": "Commits the group refused during a rebalance",
    "commit_retries": "Commits that failed for now (broker unreachable) and were retried",
    "handler_errors": "Messages whose handling raised (dead-lettered)",
    "rebalances": "Assignment changes seen",
}


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


class RunnerCollector(Collector):
    """Metric families of one runner, labelled with its service name."""

    def __init__(self, runner: StreamRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        runner = self.runner
        service = runner.service.name
        stats = runner.stats_dict()
        for name, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"nmt_{name}", help_text, labels=["service"])
            family.add_metric([service], float(stats.get(name, 0)))
            yield family
        produced = CounterMetricFamily("nmt_records_out", "Records sent, by topic", labels=["service", "topic"])
        for topic, count in sorted(runner.emitter.sent.items()):
            produced.add_metric([service, topic], float(count))
        yield produced
        lag = GaugeMetricFamily("nmt_consumer_lag", "Messages behind the end of each assigned partition", labels=["service", "topic", "partition"])
        for (topic, partition), behind in sorted(runner.lag().items()):
            lag.add_metric([service, topic, str(partition)], float(behind))
        yield lag
        durations = list(runner.stats.batch_seconds)
        buckets = [(str(b), float(sum(d <= b for d in durations))) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        histogram = HistogramMetricFamily("nmt_batch_seconds", "Time to handle a batch (last 1000 batches)", labels=["service"])
        histogram.add_metric([service], buckets, sum(durations))
        yield histogram
        for name, value in sorted(runner.service.stats().items()):
            if name in _COUNTERS:
                continue
            gauge = GaugeMetricFamily(f"nmt_{_metric_name(service)}_{_metric_name(name)}", f"{service}: {name}", labels=["service"])
            gauge.add_metric([service], float(value))
            yield gauge


def serve_metrics(runners: Sequence[StreamRunner], port: int, host: str = "127.0.0.1") -> int:
    """Expose the metrics of ``runners`` (one process's services) on ``http://host:port/metrics``
    from a daemon thread; return the port bound (``port`` 0 picks a free one)."""
    registry = CollectorRegistry()
    for runner in runners:
        registry.register(RunnerCollector(runner))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("metrics of %s on http://%s:%d/metrics", ", ".join(r.service.name for r in runners), host, bound)
    return bound
