"""The copy head: its mixture, batched decoding through it, and learning to copy names a base never saw."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nm_toolkit.llm.batching import BatcherConfig, ContinuousBatcher
from nm_toolkit.llm.context import invented_place_name
from nm_toolkit.llm.copy_head import CopyHead, CopyHeadConfig, copy_head_facts, fit_copy_head, last_hidden
from nm_toolkit.llm.generation import BASE, AdapterLM, GenerationLimits
from nm_toolkit.llm.offline import load_causal_lm


@pytest.fixture(scope="module")
def cloud(tiny_llms: Path) -> AdapterLM:
    model, tokenizer = load_causal_lm(tiny_llms / "cloud")
    return AdapterLM(model.eval(), tokenizer)


def _head(lm: AdapterLM, gate_bias: float, seed: int = 0) -> CopyHead:
    torch.manual_seed(seed)
    head = CopyHead(lm.model.config.hidden_size, dim=16)
    with torch.no_grad():
        head.gate.bias.fill_(gate_bias)
    return head.eval()


def test_the_mixture_is_a_distribution_and_a_shut_gate_leaves_the_model_alone(cloud: AdapterLM) -> None:
    torch.manual_seed(1)
    rows, prompt, vocab, hidden_size = 3, 7, cloud.model.config.vocab_size, cloud.model.config.hidden_size
    logits, hidden = torch.randn(rows, vocab), torch.randn(rows, hidden_size)
    ids = torch.randint(0, vocab, (rows, prompt))
    valid = torch.ones((rows, prompt), dtype=torch.bool)
    valid[0, 5:] = False  # row 0's prompt is shorter: its padding gets no attention
    with torch.no_grad():
        opened = _head(cloud, 4.0)
        keys = torch.stack([opened.keys(torch.randn(prompt, hidden_size)) for _ in range(rows)])
        mixed = opened.log_probs(logits, hidden, keys, ids, valid).exp()
        assert torch.allclose(mixed.sum(-1), torch.ones(rows), atol=1e-5)
        outside = torch.ones(vocab, dtype=torch.bool)
        outside[ids[0, :5]] = False
        # with the gate open, almost all mass sits on the prompt's tokens (padding's included only if real)
        assert mixed[0, ~outside].sum() > 0.9 and mixed[0, ids[0, 5:]].sum() <= mixed[0, ~outside].sum() + 1e-6
        shut = _head(cloud, -60.0).log_probs(logits, hidden, keys, ids, valid)
        assert torch.allclose(shut.exp(), logits.softmax(-1), atol=1e-6)


def test_batched_decoding_through_a_head_equals_decoding_each_request_from_scratch(cloud: AdapterLM, tmp_path: Path) -> None:
    head = _head(cloud, 0.5, seed=2)
    head.save(tmp_path, copy_head_facts(CopyHeadConfig(dim=16), [0.0], 0))
    loaded = CopyHead.load(tmp_path)
    assert loaded is not None and all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), loaded.state_dict().values(), strict=True))
    assert CopyHead.load(tmp_path / "elsewhere") is None
    lm = AdapterLM(cloud.model, cloud.tokenizer, copy_heads={BASE: loaded})
    prompts = ["question: is Bar Rossi open?\nanswer:", "hello", "question: the nearest pharmacy is Farmacia Verdi 12, 300 m away\nanswer:",
               "find a gym", "question: where is Palestra Conti?\nanswer:"]  # fmt: skip
    limits = GenerationLimits(max_new_tokens=6)

    def from_scratch(prompt: str) -> str:
        ids = cloud.tokenizer(prompt, add_special_tokens=False).input_ids
        p, out = len(ids), list(ids)
        with torch.no_grad():
            keys = None
            for _ in range(limits.max_new_tokens):
                logits, hidden = last_hidden(cloud.model, torch.tensor([out]))
                keys = loaded.keys(hidden[0, :p]) if keys is None else keys
                scores = loaded.log_probs(logits[:, -1].float(), hidden[:, -1], keys[None], torch.tensor([ids]), torch.ones((1, p), dtype=torch.bool))
                token = int(scores.argmax())
                if token == cloud.tokenizer.eos_token_id:
                    break
                out.append(token)
        return cloud.tokenizer.decode(out[p:], skip_special_tokens=True).strip()

    expected = [from_scratch(p) for p in prompts]
    # two newcomers per step: rows join a running batch and leave it at different steps
    batched = ContinuousBatcher(lm, BatcherConfig(max_batch_size=4, max_prefill=2)).generate_all(prompts, [BASE] * len(prompts), limits)
    assert [g.text for g in batched] == expected
    assert [g.text for g in lm.generate(prompts, limits=limits)] == expected  # generate() goes through the head too
    assert [g.text for g in cloud.generate(prompts, limits=limits)] != expected  # and the head changed what the model alone writes


def test_a_fitted_head_copies_names_the_base_never_saw(cloud: AdapterLM) -> None:
    rng = random.Random(0)
    frames = ("question: the nearest place is {name}, {m} m away\nanswer:", "question: is {name} open now?\nanswer:",
              "question: take me to {name} please\nanswer:")  # fmt: skip

    def pairs(n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            name = invented_place_name(rng)
            out.append((rng.choice(frames).format(name=name, m=rng.randrange(40, 900, 10)), f" {name}"))
        return out

    head, losses = fit_copy_head(cloud.model, cloud.tokenizer, pairs(240), CopyHeadConfig(dim=32, epochs=4))
    assert losses[-1] < losses[0]
    lm = AdapterLM(cloud.model, cloud.tokenizer, copy_heads={BASE: head})
    held_out = pairs(40)
    answers = lm.generate([p for p, _ in held_out], limits=GenerationLimits(max_new_tokens=8))
    copied = sum(g.text.startswith(name.strip()) for g, (_, name) in zip(answers, held_out, strict=True))
    alone = sum(g.text.startswith(name.strip()) for g, (_, name) in zip(cloud.generate([p for p, _ in held_out], limits=GenerationLimits(max_new_tokens=8)), held_out, strict=True))
    # the test's base had 5 steps of pre-training: 22 of 40 copied (the bench's cloud base: 90 %); alone it copies none
    assert copied >= 0.4 * len(held_out) and alone == 0, (copied, alone)
