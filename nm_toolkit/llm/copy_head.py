"""A copy head: a pointer over the prompt's tokens, mixed into a causal LM's next-token distribution.

The cloud answers a completed prompt that names a place the model has never seen ("Metro Colombo
34"), and the answer must name it again. A large LM copies with induction heads; the toolkit's own
small cloud base has none, and its LoRA adapters learnt to copy half the names at best, keeping the
first word and guessing the rest. A pointer-generator head (See et al., 2017, "Get To The Point")
copies by construction: the next-token distribution becomes

    p(w) = (1 - g) * softmax(logits)(w) + g * sum of a_i over the prompt positions i holding w

with ``a`` an attention of the current position over the prompt's positions and ``g`` a learnt
gate. Its keys hold the last hidden state of a position and of the one before it, so "the token
after the one just written" is one dot product away: the induction step the base lacks. The head
reads only the model's last hidden states, so it works on any causal LM; it is trained after the
row's LoRA adapter, with base and adapter frozen (:func:`fit_copy_head`, seconds on a CPU), and is
saved in the adapter's directory (:meth:`CopyHead.save`), where :class:`~nm_toolkit.llm.generation.AdapterLM`
finds it. Decoding with it is :class:`~nm_toolkit.llm.batching.ContinuousBatcher`'s job.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.llm.training import IGNORE, encode_pair

COPY_HEAD_WEIGHTS = "copy_head.safetensors"
COPY_HEAD_CONFIG = "copy_head.json"


@dataclass(frozen=True)
class CopyHeadConfig:
    """The head's attention width and its training schedule (one pass per epoch over the pairs)."""

    dim: int = 64
    epochs: int = 6
    learning_rate: float = 3e-3
    max_length: int = 320
    seed: int = 0


class CopyHead(nn.Module):
    """Query, key and gate projections of one model's last hidden states (see the module docstring)."""

    def __init__(self, hidden_size: int, dim: int = CopyHeadConfig.dim) -> None:
        super().__init__()
        self.hidden_size, self.dim = hidden_size, dim
        self.query = nn.Linear(hidden_size, dim)
        self.key = nn.Linear(2 * hidden_size, dim)
        self.gate = nn.Linear(hidden_size, 1)

    def keys(self, hidden: torch.Tensor) -> torch.Tensor:
        """Keys of a prompt's positions from its last hidden states ``(P, hidden)``: each position's
        state next to the previous one's (the first position's own state stands in for its previous)."""
        previous = torch.cat([hidden[:1], hidden[:-1]])
        return self.key(torch.cat([hidden, previous], dim=-1))

    def log_probs(self, logits: torch.Tensor, hidden: torch.Tensor, keys: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """Log of the mixed next-token distribution of ``R`` rows.

        ``logits`` ``(R, V)`` and ``hidden`` ``(R, hidden)``: the model's at the current position;
        ``keys`` ``(R, P, dim)``, ``prompt_ids`` ``(R, P)`` and ``prompt_mask`` ``(R, P)`` (False:
        padding): each row's prompt, padded to the longest.
        """
        scores = torch.einsum("rd,rpd->rp", self.query(hidden), keys) / math.sqrt(self.dim)
        attention = scores.masked_fill(~prompt_mask, -float("inf")).softmax(-1)
        copied = torch.zeros_like(logits).scatter_add_(1, prompt_ids, attention)
        gate = torch.sigmoid(self.gate(hidden))
        return torch.log((1 - gate) * logits.float().softmax(-1) + gate * copied + 1e-12)

    def save(self, directory: Path, facts: dict[str, object] | None = None) -> None:
        """Weights and shape into ``directory`` (an adapter's), with ``facts`` about its training."""
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / COPY_HEAD_WEIGHTS))
        (directory / COPY_HEAD_CONFIG).write_text(json.dumps({"hidden_size": self.hidden_size, "dim": self.dim, **(facts or {})}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> CopyHead | None:
        """The head saved in ``directory``; None where there is none."""
        if not (directory / COPY_HEAD_WEIGHTS).is_file():
            return None
        shape = json.loads((directory / COPY_HEAD_CONFIG).read_text())
        head = cls(shape["hidden_size"], shape["dim"])
        head.load_state_dict(load_file(str(directory / COPY_HEAD_WEIGHTS)))
        return head.eval()


def last_hidden(model: PreTrainedModel, input_ids: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and last hidden states of one forward pass (the states the head reads, as the batcher reads them)."""
    out = model(input_ids=input_ids, output_hidden_states=True, **kwargs)
    return out.logits, out.hidden_states[-1]


def fit_copy_head(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], config: CopyHeadConfig = CopyHeadConfig()
) -> tuple[CopyHead, list[float]]:
    """Train a head on (prompt, answer) pairs over ``model`` as it stands (its active adapter
    included, all frozen); returns the head and the mean loss of each epoch.

    The model runs once per pair; the epochs then train the head alone on its stored states.
    """
    torch.manual_seed(config.seed)
    examples = []
    model.eval()
    with torch.no_grad():
        for prompt, answer in pairs:
            ids, labels = encode_pair(tokenizer, prompt, answer, config.max_length)
            prompt_len = sum(label == IGNORE for label in labels)
            if prompt_len == 0 or prompt_len == len(ids):
                continue
            logits, hidden = last_hidden(model, torch.tensor([ids]))
            # only the positions that predict the answer: a vocabulary-wide row per prompt token is most of the memory
            examples.append((logits[0, prompt_len - 1 : -1].float(), hidden[0], torch.tensor(ids), prompt_len))
    if not examples:
        raise ValueError("no pair has both a prompt and an answer within max_length to train a copy head on")
    head = CopyHead(examples[0][1].shape[-1], config.dim)
    optimiser = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    order, losses = list(range(len(examples))), []
    rng = random.Random(config.seed)
    for _ in range(config.epochs):
        rng.shuffle(order)
        total = 0.0
        for j in order:
            logits, hidden, ids, p = examples[j]
            steps = len(ids) - p  # positions p-1 .. len-2 predict the answer tokens
            keys = head.keys(hidden[:p])[None].expand(steps, -1, -1)
            log_p = head.log_probs(logits, hidden[p - 1 : -1], keys, ids[:p][None].expand(steps, -1), torch.ones((steps, p), dtype=torch.bool))
            loss = -log_p.gather(1, ids[p:, None]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
        losses.append(total / len(examples))
    return head.eval(), losses


def copy_head_facts(config: CopyHeadConfig, losses: Sequence[float], pairs: int) -> dict[str, object]:
    """What :meth:`CopyHead.save` records about a head's training."""
    return {"config": asdict(config), "pairs": pairs, "epoch_losses": [round(x, 4) for x in losses]}
