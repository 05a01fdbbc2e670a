"""The causal-LM training loop shared by pre-training and LoRA fine-tuning.

Examples are (prefix, target) pairs: the loss covers only the target tokens (for pre-training the
prefix is empty), so fine-tuning teaches the completion, not the context it is conditioned on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.errors import UserError

IGNORE = -100
StepCallback = Callable[[int, float], None]


def encode_pair(tokenizer: PreTrainedTokenizerBase, prefix: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of ``prefix + target + eos`` and labels that ignore the prefix; truncated from the left."""
    prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids if prefix else []
    target_ids = tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (prefix_ids + target_ids)[-max_length:]
    labels = ([IGNORE] * len(prefix_ids) + target_ids)[-max_length:]
    return ids, labels


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` (a GPU when torch sees one) as a torch device.

    Training is where a GPU pays off: pre-training a few-million-parameter model for tens of
    thousands of steps takes hours on two CPU cores and minutes on one GPU. Serving stays on the CPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from exc


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch (training needs no left padding) with padded labels ignored."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def train(
    model: PreTrainedModel,
    examples: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_step: StepCallback | None = None,
) -> list[float]:
    """AdamW with linear warm-up and cosine decay over ``steps`` batches; returns the loss per step."""
    generator = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))),
    )
    order: list[int] = []
    losses = []
    device = model.device
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += generator.sample(range(len(examples)), len(examples))
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in order[:batch_size]], pad_id).items()}
        del order[:batch_size]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def mean_loss(model: PreTrainedModel, examples: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 32) -> float:
    """Token-weighted mean cross-entropy over the labelled tokens of ``examples``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
        total += float(loss)
        count += int((labels != IGNORE).sum())
    return total / max(1, count)
