"""Shared fixtures: a real Kafka broker for the whole session, and paths to the shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nm_toolkit.devtools.kafka import KafkaBroker

TESTS_DIR = Path(__file__).parent


def _bind_library_log_handlers() -> None:
    """transformers and huggingface_hub give their loggers a stream handler on first use, bound to
    the ``sys.stderr`` of that moment. Bind them now, to the session's stream: bound inside a
    ``CliRunner.invoke`` they would write to its stream after it closed ("I/O operation on closed file")."""
    import huggingface_hub.utils.logging
    import transformers.utils.logging

    huggingface_hub.utils.logging.get_logger()
    transformers.utils.logging.get_logger()


_bind_library_log_handlers()
DATA_DIR = TESTS_DIR / "data"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A single-node Kafka 4.x broker on 127.0.0.1, started once per test session."""
    with KafkaBroker(partitions=4) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap_servers


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    the tests share two cores with a broker and service processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_llms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 edge model (``edge``), a tiny LLaMA cloud model (``cloud``) and a small
    synthetic city (``context.json``), built once per session in a few seconds."""
    import torch

    from nm_toolkit.llm.context import synthetic_city
    from nm_toolkit.llm.corpus import CorpusConfig
    from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised

    corpus = CorpusConfig(user_prompts=100, intents=50, telemetry=50, contexts=50, vocabulary_repeats=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-llms")
    for name, arch, seed in (("edge", "gpt2", 3), ("cloud", "llama", 4)):
        config = InitConfig(arch=arch, preset="tiny", steps=5, batch_size=4, seed=seed, corpus=corpus)
        save_initialised(root / name, *initialise_model(config))
    synthetic_city(seed=4, districts=3, cells_per_district=2, users=5).save(root / "context.json")
    torch.set_num_threads(threads)
    return root


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests from reading a developer's nmt.toml or NMT_* variables, and their state."""
    for name in list(os.environ):
        if name.startswith("NMT_") and name != "NMT_KAFKA_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NMT_STATE_DIR", str(tmp_path / "state"))
