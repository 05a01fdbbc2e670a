"""Continuous batching and int8 quantisation on tiny GPT-2 and LLaMA models (seconds, no training).

The models are randomly initialised with a wide weight scale, so their next-token distributions are
peaked and depend strongly on token positions: a padding or position mistake changes the greedy
output instead of hiding in a near-tie. LoRA adapters get random (non-zero) weights for the same reason.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from nm_toolkit.errors import UserError
from nm_toolkit.llm.batching import BatcherConfig, ContinuousBatcher
from nm_toolkit.llm.corpus import CorpusConfig, build_corpus
from nm_toolkit.llm.generation import BASE, AdapterLM, GenerationLimits
from nm_toolkit.llm.lora import DEFAULT_TARGET_MODULES
from nm_toolkit.llm.presets import PRESETS, transformers_config
from nm_toolkit.llm.quantize import quantize_dynamic_int8, serialized_mb
from nm_toolkit.llm.tokenizer import train_bpe_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "request: coffee near me\nprompt:",
    "cell",
    "request: show the load of cell 12 in Brera please\nprompt:",
    "intent: block",
    "the network of the district",
    "request: where is the nearest pharmacy open now\nprompt:",
    "slice",
]
LIMITS = [GenerationLimits(max_new_tokens=n, min_new_tokens=m) for n, m in ((12, 0), (5, 0), (20, 4), (3, 0), (16, 0), (9, 0), (14, 2))]


@pytest.fixture(scope="module")
def tokenizer():
    docs = build_corpus(CorpusConfig(user_prompts=60, intents=40, telemetry=20, contexts=20, vocabulary_repeats=1))
    return train_bpe_tokenizer(docs, 512)


def random_lm(tokenizer, arch: str, adapters: tuple[str, ...] = (), context: int | None = None) -> AdapterLM:
    preset = PRESETS["tiny"] if context is None else dataclasses.replace(PRESETS["tiny"], context=context)
    config = transformers_config(arch, preset, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    for i, name in enumerate(adapters):
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(DEFAULT_TARGET_MODULES[arch]), init_lora_weights=False, fan_in_fan_out=arch == "gpt2")
        torch.manual_seed(10 + i)
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora)
        else:
            model = get_peft_model(model, lora, adapter_name=name)
    return AdapterLM(model.eval(), tokenizer)


def one_at_a_time(lm: AdapterLM, prompts, adapters, limits):
    return [lm.generate([p], [a] if a != BASE or isinstance(lm.model, PeftModel) else None, lim)[0] for p, a, lim in zip(prompts, adapters, limits)]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_outputs_equal_one_at_a_time_generate(tokenizer, arch: str) -> None:
    lm = random_lm(tokenizer, arch)
    expected = one_at_a_time(lm, PROMPTS, [BASE] * len(PROMPTS), LIMITS)
    assert len({g.text for g in expected}) > 4  # the model is not degenerate: the comparison means something
    # three rows at most and two joins per step: rows leave and newcomers join throughout
    batcher = ContinuousBatcher(lm, BatcherConfig(max_batch_size=3, max_prefill=2))
    assert batcher.generate_all(PROMPTS, limits=LIMITS) == expected
    assert ContinuousBatcher(lm).generate_all(PROMPTS, limits=LIMITS) == expected


def test_suppressed_tokens_are_never_written_as_in_generate(tokenizer) -> None:
    lm = random_lm(tokenizer, "gpt2")
    free = one_at_a_time(lm, PROMPTS, [BASE] * len(PROMPTS), LIMITS)
    written = sorted({t for g in free for t in tokenizer(g.text, add_special_tokens=False).input_ids})[:20]
    limits = [dataclasses.replace(lim, suppress_tokens=tuple(written)) for lim in LIMITS]
    expected = one_at_a_time(lm, PROMPTS, [BASE] * len(PROMPTS), limits)
    assert expected != free  # the suppression changed what the model writes
    assert ContinuousBatcher(lm, BatcherConfig(max_batch_size=3, max_prefill=2)).generate_all(PROMPTS, limits=limits) == expected


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_mixed_lora_adapters_in_one_running_batch(tokenizer, arch: str) -> None:
    lm = random_lm(tokenizer, arch, ("north", "south"))
    names = ["north", "south", BASE, "south", "north", BASE, "north"]
    expected = one_at_a_time(lm, PROMPTS, names, LIMITS)
    per_adapter = {n: one_at_a_time(lm, PROMPTS[:3], [n] * 3, LIMITS[:3]) for n in ("north", "south", BASE)}
    assert per_adapter["north"] != per_adapter["south"] != per_adapter[BASE]  # the adapters matter
    batcher = ContinuousBatcher(lm, BatcherConfig(max_batch_size=4, max_prefill=3))
    assert batcher.generate_all(PROMPTS, names, LIMITS) == expected
    with pytest.raises(UserError, match="not loaded"):
        batcher.submit("cell", "missing")


def test_requests_join_a_running_batch_mid_generation(tokenizer) -> None:
    lm = random_lm(tokenizer, "gpt2")
    expected = one_at_a_time(lm, PROMPTS, [BASE] * len(PROMPTS), LIMITS)
    batcher = ContinuousBatcher(lm, BatcherConfig(max_batch_size=8, max_prefill=8))
    handles = [batcher.submit(PROMPTS[i], limits=LIMITS[i]) for i in (0, 2)]
    results = {}
    for _ in range(3):
        results.update((c.handle, c.generation) for c in batcher.step())
    assert batcher.active == 2 and not results
    handles += [batcher.submit(PROMPTS[i], limits=LIMITS[i]) for i in range(len(PROMPTS)) if i not in (0, 2)]
    assert batcher.waiting == len(PROMPTS) - 2
    results.update((c.handle, c.generation) for c in batcher.step())
    assert batcher.active > 2 and batcher.waiting == 0  # joined at the next step, beside the running rows
    while batcher.active or batcher.waiting:
        results.update((c.handle, c.generation) for c in batcher.step())
    order = [0, 2] + [i for i in range(len(PROMPTS)) if i not in (0, 2)]
    assert [results[h] for h in handles] == [expected[i] for i in order]


def test_each_row_ends_at_its_own_timeout_counted_from_submission(tokenizer) -> None:
    lm = random_lm(tokenizer, "llama")
    now = [0.0]
    batcher = ContinuousBatcher(lm, clock=lambda: now[0])
    slow = batcher.submit(PROMPTS[0], limits=GenerationLimits(max_new_tokens=50, timeout_s=4.5))
    late = batcher.submit(PROMPTS[1], limits=GenerationLimits(max_new_tokens=5, timeout_s=0.5))
    now[0] = 1.0  # the second request waited longer than its timeout before the first step
    done = {}
    while batcher.active or batcher.waiting:
        done.update((c.handle, c) for c in batcher.step())
        now[0] += 1.0
    assert done[late].generation.new_tokens == 0 and not done[late].generation.finished
    # one token per step at t = 1, 2, ...; the one written at t = 5 is the first past 4.5 s and the last
    assert done[slow].generation.new_tokens == 5 and not done[slow].generation.finished
    assert done[slow].done - done[slow].submitted > 4.5


def test_shared_prefix_cache_gives_the_same_outputs(tokenizer) -> None:
    lm = random_lm(tokenizer, "llama", ("north",))
    prefix = "request: show the load of cell"
    prompts = [prefix + tail for tail in (" 12 in Brera\nprompt:", " 7 now\nprompt:", " 3\nprompt:")] + ["cell"]
    names = ["north", BASE, "north", "north"]
    limits = [GenerationLimits(max_new_tokens=n) for n in (10, 6, 12, 4)]
    expected = one_at_a_time(lm, prompts, names, limits)
    batcher = ContinuousBatcher(lm, BatcherConfig(max_batch_size=3, max_prefill=2))
    batcher.add_prefix(prefix)
    assert batcher.generate_all(prompts, names, limits) == expected
    assert set(batcher._prefixes[0].caches) == {"north", BASE}  # the prefix was run once per adapter and reused


def test_seeded_sampling_is_reproducible(tokenizer) -> None:
    lm = random_lm(tokenizer, "gpt2")
    limits = GenerationLimits(max_new_tokens=12, do_sample=True, temperature=2.0)
    runs = [ContinuousBatcher(lm, seed=s).generate_all(PROMPTS[:3], limits=limits) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_int8_model_keeps_generating_with_its_adapters(tokenizer, arch: str) -> None:
    lm = random_lm(tokenizer, arch, ("north",))
    fp32_mb = serialized_mb(lm.model)
    fp32 = one_at_a_time(lm, PROMPTS, ["north"] * len(PROMPTS), LIMITS)
    quantize_dynamic_int8(lm.model)
    assert serialized_mb(lm.model) < fp32_mb
    assert not any(type(m).__name__ == "Conv1D" for m in lm.model.modules())
    assert all(type(m) is torch.nn.Linear for n, m in lm.model.named_modules() if n.endswith(("lora_A.north", "lora_B.north")))
    int8 = one_at_a_time(lm, PROMPTS, ["north"] * len(PROMPTS), LIMITS)
    assert all(g.new_tokens > 0 or g.finished for g in int8)
    assert sum(a.text == b.text for a, b in zip(fp32, int8)) >= 1  # close to fp32 (the bench measures how close)
    # one row at a time the batcher computes exactly what generate does; in a wider batch the int8
    # activations share one scale across the rows, so outputs may drift with the batch's company
    assert ContinuousBatcher(lm, BatcherConfig(max_batch_size=1)).generate_all(PROMPTS, ["north"] * len(PROMPTS), LIMITS) == int8
    wide = ContinuousBatcher(lm).generate_all(PROMPTS, ["north"] * len(PROMPTS), LIMITS)
    assert [g.adapter for g in wide] == ["north"] * len(PROMPTS)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_long_runs_slide_through_the_kv_slab(tokenizer, arch: str, monkeypatch) -> None:
    """The running rows' columns move right when a wider newcomer joins and back to column 0 when
    they reach the slab's end (a 64-token context: a slab of 128 columns); rows reusing a prefix
    beside longer prompts in one prefill keep contiguous columns, so they never outgrow the slab."""
    lm = random_lm(tokenizer, arch, ("north",), context=64)
    prefix = "request: show the load of cell"
    prompts = ["cell", prefix + " 12 in Brera please\nprompt:", prefix + " 3\nprompt:", PROMPTS[5], "slice", prefix + " 7\nprompt:", "intent: block"]
    names = [BASE, "north", BASE, "north", "north", BASE, BASE]
    limits = [GenerationLimits(max_new_tokens=n, min_new_tokens=n) for n in (30, 30, 40, 35, 50, 40, 45)]  # no early end-of-text, within the context
    expected = one_at_a_time(lm, prompts, names, limits)
    batcher = ContinuousBatcher(lm, BatcherConfig(max_batch_size=2, max_prefill=2))
    batcher.add_prefix(prefix)
    shifts: list[int] = []
    shift = batcher._shift
    monkeypatch.setattr(batcher, "_shift", lambda by: (shifts.append(by), shift(by)))
    handles = [batcher.submit(prompts[0], names[0], limits[0])]
    results = {c.handle: c.generation for c in batcher.step()}  # "cell" runs alone: the next prompts are wider than its columns
    handles += [batcher.submit(p, a, lim) for p, a, lim in zip(prompts[1:], names[1:], limits[1:], strict=True)]
    while batcher.active or batcher.waiting:
        results.update((c.handle, c.generation) for c in batcher.step())
    assert [results[h] for h in handles] == expected
    assert any(by > 0 for by in shifts) and any(by < 0 for by in shifts)
