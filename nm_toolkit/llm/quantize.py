"""int8 dynamic quantisation of the edge model's linear layers, for CPU serving.

Dynamic quantisation stores each linear weight as int8 with one scale per tensor and quantises the
activations on the fly, so it needs no calibration data and no retraining: a quarter of the weight
memory, and int8 matrix products on x86 (fbgemm/onednn) and ARM (qnnpack) CPUs.

GPT-2 keeps its linear layers as transformers' ``Conv1D`` (the weight transposed), which torch's
quantiser does not know; they are rewritten as ``nn.Linear`` first (same maths). LoRA adapters stay
in float: the quantiser skips peft's ``lora_`` modules, so a quantised model keeps serving
per-request adapters on top of its int8 base weights (``base_layer`` inside each LoRA layer). The
output head is skipped by default: it shares its weight with the token embedding, and quantising it
would store a second (int8) copy of the largest matrix and costs most of the agreement with fp32.

torch marks ``torch.ao.quantization`` deprecated in favour of torchao; it still works in the torch
versions this toolkit supports, and its warnings are silenced here rather than at every call site.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every transformers ``Conv1D`` in ``model`` (in place) by the equivalent ``nn.Linear``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _linear_of(child))
    return model


def _linear_of(conv: Conv1D) -> nn.Linear:
    fan_in, fan_out = conv.weight.shape  # Conv1D computes x @ weight + bias
    linear = nn.Linear(fan_in, fan_out, bias=conv.bias is not None, dtype=conv.weight.dtype, device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    linear.requires_grad_(conv.weight.requires_grad)
    return linear


def quantize_dynamic_int8(model: nn.Module, skip: Sequence[str] = ("lm_head",)) -> nn.Module:
    """``model`` (in place, for inference only) with its linear layers int8-quantised.

    A module is left in float when a dot-separated part of its name is in ``skip`` or starts with
    ``lora_`` (peft's adapter weights: small, and trained in float).
    """
    conv1d_to_linear(model)
    names = {
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not any(part in skip or part.startswith("lora_") for part in name.split("."))
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_tensor).*")
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    model.eval()
    return model


def serialized_mb(model: nn.Module) -> float:
    """Size of ``model``'s state dict as ``torch.save`` writes it (tied weights counted once), in MiB."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20
