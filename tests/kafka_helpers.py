"""Helpers for tests against the real broker: unique topic names and bounded reads."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd

from nm_toolkit.bus import Bus, Message
from nm_toolkit.config import Settings, load_settings
from nm_toolkit.schemas import SeriesPoint


def kafka_settings(bootstrap: str, state_dir: str, **collector: object) -> Settings:
    """Settings on the test broker with topics and group unique to one test."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        name: f"{tag}.{name}" for name in ("telemetry", "dead_letter", "late", "series", "forecasts", "decisions")
    }
    return load_settings(
        bus={"kind": "kafka", "bootstrap_servers": bootstrap},
        topics=topics,
        collector={"group_id": f"collector-{tag}", **collector},
        state_dir=state_dir,
    )


def read_all(bus: Bus, topic: str, expected: int, timeout_s: float = 60.0) -> list[Message]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived (or the timeout)."""
    consumer = bus.consumer([topic], f"reader-{uuid.uuid4().hex[:8]}")
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(consumer.poll(5000, 0.5))
        # anything beyond the expected count (duplicates) should show up too
        out.extend(consumer.poll(5000, 1.0))
    finally:
        consumer.close()
    return out


def windows_frame(messages: list[Message]) -> pd.DataFrame:
    points = [SeriesPoint.model_validate_json(m.value) for m in messages]
    return pd.DataFrame(
        [(p.source, p.metric, int(p.window_start.timestamp()), p.count, p.sum, p.min, p.max) for p in points],
        columns=["source", "metric", "window", "count", "sum", "min", "max"],
    )


def expected_windows(records: pd.DataFrame, window_seconds: int) -> pd.DataFrame:
    """The aggregation computed directly with pandas, to compare the collector against."""
    keyed = records.assign(window=(records["ts"] // window_seconds * window_seconds).astype(int))
    out = keyed.groupby(["source", "metric", "window"])["value"].agg(["count", "sum", "min", "max"]).reset_index()
    return out.sort_values(["source", "metric", "window"]).reset_index(drop=True)


def llm_env(bootstrap: str, state_dir: Path, models: Path, tag: str) -> dict[str, str]:
    """``NMT_*`` settings of edge and cloud services on the test broker: topics and groups unique to
    ``tag``, the tiny models of the ``tiny_llms`` fixture in ``models``."""
    topics = {name: f"{tag}.{name}" for name in ("prompts", "answers", "cloud_requests", "cloud_status")}
    return {
        "NMT_BUS__KIND": "kafka",
        "NMT_BUS__BOOTSTRAP_SERVERS": bootstrap,
        "NMT_STATE_DIR": str(state_dir),
        "NMT_LLM__GROUP_ID": f"edge-{tag}",
        "NMT_LLM__CLOUD_GROUP_ID": f"cloud-{tag}",
        "NMT_LLM__DEAD_LETTER_TOPIC": f"{tag}.prompts.dlq",
        "NMT_LLM__CLOUD_DEAD_LETTER_TOPIC": f"{tag}.cloud.dlq",
        "NMT_LLM__EDGE_MODEL": str(models / "edge"),
        "NMT_LLM__CLOUD_MODEL": str(models / "cloud"),
        "NMT_LLM__CONTEXT_STORE": str(models / "context.json"),
        "NMT_LLM__MAX_NEW_TOKENS": "4",
        "OMP_NUM_THREADS": "1",
        **{f"NMT_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
