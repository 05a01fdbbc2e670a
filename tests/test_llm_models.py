"""Models end to end on tiny sizes: init/save/load, seeded generation, LoRA training, adapter switching."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nm_toolkit.errors import UserError
from nm_toolkit.llm.completion_data import build_completion_dataset
from nm_toolkit.llm.context import synthetic_city
from nm_toolkit.llm.corpus import CorpusConfig
from nm_toolkit.llm.generation import BASE, AdapterLM, GenerationLimits
from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
from nm_toolkit.llm.lora import (
    AdapterCard,
    AdapterRegistry,
    LoraFineTuner,
    LoraTrainConfig,
    heldout_loss,
)
from nm_toolkit.llm.offline import CheckpointError, load_causal_lm
from nm_toolkit.llm.training import resolve_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_CORPUS = CorpusConfig(user_prompts=200, intents=150, telemetry=150, contexts=150, vocabulary_repeats=1)
TINY = InitConfig(arch="gpt2", preset="tiny", steps=30, batch_size=8, corpus=TINY_CORPUS, seed=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    model, tokenizer, losses, facts = initialise_model(TINY)
    directory = tmp_path_factory.mktemp("tiny") / "edge"
    save_initialised(directory, model, tokenizer, losses, facts)
    return directory, model, losses


@pytest.fixture(scope="module")
def data():
    store = synthetic_city(seed=2, districts=8, cells_per_district=2, users=20)
    train, test = build_completion_dataset(store, 240, 24, seed=2)
    return [(e.input, " " + e.target) for e in train], [(e.input, " " + e.target) for e in test]


@pytest.fixture(scope="module")
def registry(tiny, data, tmp_path_factory: pytest.TempPathFactory):
    """Two adapters for different tasks: prompt completion and (a toy) shouting the request back."""
    directory, _, _ = tiny
    store = AdapterRegistry(tmp_path_factory.mktemp("adapters"))
    train, held = data
    shout = [(prefix, " " + prefix.rsplit("request:", 1)[1].split("\n")[0].upper()) for prefix, _ in train]
    results = {}
    for name, task, pairs in (("complete", "prompt_completion", train), ("shout", "shout", shout)):
        model, tokenizer = load_causal_lm(directory)
        before = heldout_loss(model, tokenizer, held)
        tuner = LoraFineTuner(LoraTrainConfig(rank=8, alpha=16, epochs=1.0, batch_size=8, learning_rate=1e-2)).fit(model, tokenizer, pairs, name)
        after = tuner.heldout_loss(tokenizer, held)
        store.save(tuner.model_, AdapterCard(name, task, str(directory), ("Brera",) if name == "shout" else ()), tuner.losses_)
        results[name] = (before, after)
    return store, results


def test_init_saves_a_checkpoint_whose_reload_gives_identical_logits(tiny) -> None:
    directory, model, losses = tiny
    assert (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file()
    card = (directory / "README.md").read_text()
    assert "seed" in card and "Loss curve" in card and (directory / "loss_curve.png").stat().st_size > 0
    assert losses[-1] < losses[0]
    loaded, tokenizer = load_causal_lm(directory)
    batch = tokenizer(["cell MI-1 | Brera | evening", "find a cafe nearby"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_a_llama_saved_tied_loads_tied_when_its_config_leaves_the_tie_out(tmp_path: Path) -> None:
    """LLaMA's default is untied: without the flag, transformers would decode through a random matrix."""
    model, tokenizer, losses, facts = initialise_model(replace(TINY, steps=3, arch="llama"))
    save_initialised(tmp_path, model, tokenizer, losses, facts)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("tie_word_embeddings") is True
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, _ = load_causal_lm(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight and loaded.config.tie_word_embeddings
    batch = tokenizer(["find a cafe nearby"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_init_is_reproducible_with_a_seed() -> None:
    config = replace(TINY, steps=3, arch="llama")
    first, _, losses_a, _ = initialise_model(config)
    second, _, losses_b, _ = initialise_model(config)
    assert losses_a == losses_b
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_scaled_corpus_grows_every_generated_kind_and_keeps_its_seed() -> None:
    scaled = TINY_CORPUS.scaled(2.5)
    assert (scaled.user_prompts, scaled.contexts, scaled.vocabulary_repeats) == (500, 375, 2)
    assert scaled.seed == TINY_CORPUS.seed
    with pytest.raises(UserError, match="positive"):
        TINY_CORPUS.scaled(0)


def test_devices_resolve_to_what_torch_has_and_a_missing_gpu_is_a_user_error() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cpu"):
            resolve_device("cuda")


def test_missing_or_foreign_directories_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nmt model init"):
        load_causal_lm(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_causal_lm(tmp_path / "empty")


def test_seeded_sampling_is_reproducible(tiny) -> None:
    lm = AdapterLM.load(tiny[0])
    limits = GenerationLimits(max_new_tokens=12, do_sample=True)
    prompts = ["request: coffee near me\nprompt:"]
    runs = [lm.generate(prompts, limits=limits, seed=s)[0].text for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] or len(runs[0]) == 0


def test_lora_training_lowers_heldout_loss(registry) -> None:
    _, results = registry
    before, after = results["complete"]
    assert after < 0.95 * before, (before, after)


def test_adapters_switch_per_request_and_mixed_batches_match_single_requests(tiny, registry, data) -> None:
    store, _ = registry
    lm = AdapterLM.load(tiny[0], store)
    assert set(lm.cards) == {"complete", "shout"}
    prompts = [p for p, _ in data[1][:3]]
    limits = GenerationLimits(max_new_tokens=16)
    batch = lm.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = {name: lm.model(**batch, adapter_names=[name] * 3).logits[:, -1] for name in ("complete", "shout", BASE)}
        mixed_logits = lm.model(**batch, adapter_names=["complete", "shout", BASE]).logits[:, -1]
    assert (logits["complete"] - logits["shout"]).abs().max() > 1e-2
    assert (logits["complete"] - logits[BASE]).abs().max() > 1e-2
    for row, name in enumerate(("complete", "shout", BASE)):
        torch.testing.assert_close(mixed_logits[row], logits[name][row])
    limits = GenerationLimits(max_new_tokens=16)
    outputs = {name: [g.text for g in lm.generate(prompts, [name] * 3, limits)] for name in ("complete", "shout", BASE)}
    mixed = lm.generate(prompts, ["complete", "shout", BASE], limits)
    assert [g.text for g in mixed] == [outputs["complete"][0], outputs["shout"][1], outputs[BASE][2]]
    assert [g.adapter for g in mixed] == ["complete", "shout", BASE]
    single = lm.generate(prompts[1:2], ["complete"], limits)[0].text
    assert single == outputs["complete"][1]  # left padding does not change a row's greedy output
    # choosing by task and location group
    assert lm.select("prompt_completion", "Navigli") == "complete"
    assert lm.select("shout", "Brera") == "shout"
    with pytest.raises(Exception, match="no adapter for task"):
        lm.select("translate", None)
