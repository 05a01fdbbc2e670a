"""Loading local Hugging Face checkpoints without ever reaching a model hub.

Operators bring their own weights (a GPT-2 at the edge, a LLaMA in the cloud) or build them with
``nmt model init``; either way nothing is downloaded at run time, so every load is
``local_files_only`` and the hub client is switched to offline mode before transformers asks it.
"""

from __future__ import annotations

import math
from pathlib import Path

import huggingface_hub.constants
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nm_toolkit.errors import UserError

# The package __init__ set HF_HUB_OFFLINE before the hub client was imported; a user's environment
# may have set it to 0, so pin the hub client offline here as well.
huggingface_hub.constants.HF_HUB_OFFLINE = True


class CheckpointError(UserError):
    """A model directory a user named is missing or is not a causal-LM checkpoint."""


def check_checkpoint_dir(path: Path) -> Path:
    """``path`` if it looks like a saved checkpoint, else a one-line error saying how to get one."""
    if not path.is_dir():
        raise CheckpointError(
            f"no model directory at {path}: build one with `nmt model init -o {path}` or pass a local Hugging Face checkpoint"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a Hugging Face checkpoint (no config.json): pass the directory save_pretrained wrote")
    return path


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, left-padding (what batched generation needs)."""
    check_checkpoint_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {path} ({_first_line(exc)}): save one next to the model") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (float32, eval mode) and tokenizer of a local causal-LM checkpoint."""
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="float32")
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a causal LM from {path} ({_first_line(exc)}): is it a GPT-2 or LLaMA checkpoint?") from exc
    tie_output_saved_without_weights(model, path)
    model.eval()
    return model, tokenizer


def tie_output_saved_without_weights(model: PreTrainedModel, path: Path) -> bool:
    """Tie the output projection to the input embeddings when the checkpoint has no weights for it.

    A checkpoint without ``lm_head.weight`` was saved tied. When its ``config.json`` does not say so
    (a writer that leaves out ``tie_word_embeddings``, or a model cache converted by another
    transformers version; LLaMA's default is untied), transformers fills the projection with fresh
    random weights and the model decodes noise. True when it tied them.
    """
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or embeddings is None or output.weight is embeddings.weight or output.weight.shape != embeddings.weight.shape:
        return False
    saved = saved_tensor_shapes(path)
    name = next(n for n, p in model.named_parameters(remove_duplicate=False) if p is output.weight)
    if not saved or name in saved:
        return False
    output.weight = embeddings.weight
    model.config.tie_word_embeddings = True
    return True


def checkpoint_parameters(path: Path) -> int:
    """How many parameters a checkpoint directory holds, read from its safetensors headers (no load)."""
    check_checkpoint_dir(path)
    return sum(math.prod(shape) for shape in saved_tensor_shapes(path).values())


def saved_tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Name -> shape of every tensor in a checkpoint's safetensors files, from their headers (empty
    for other formats)."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as tensors:
            shapes.update({name: tensors.get_slice(name).get_shape() for name in tensors.keys()})
    return shapes


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
