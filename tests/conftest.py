"""Shared fixtures: a real Kafka broker for the whole session, and paths to the shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nm_toolkit.devtools.kafka import KafkaBroker

TESTS_DIR = Path(__file__).parent
DATA_DIR = TESTS_DIR / "data"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A single-node Kafka 4.x broker on 127.0.0.1, started once per test session."""
    with KafkaBroker(partitions=4) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap_servers


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests from reading a developer's nmt.toml or NMT_* variables, and their state."""
    for name in list(os.environ):
        if name.startswith("NMT_") and name != "NMT_KAFKA_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NMT_STATE_DIR", str(tmp_path / "state"))
