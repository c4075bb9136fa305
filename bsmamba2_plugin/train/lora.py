"""LoRA fine-tuning (`--train_lora_loralib`, MSST's `lora:` section), applied in weight space.

MSST's loralib path swaps every nn.Linear for `loralib.Linear`, which adds the low-rank update to
the layer's *output*. BSMamba2's batched products (band split, mask estimator, the fused
bidirectional Mamba2 in_proj and out_proj) read the layers' weights instead of calling them; they
read them through `bsmamba2_plugin.model.linear_weight.effective_weight`, which gives a
loralib.Linear's W + (B @ A) * scaling too, so MSST's own train.py adapts them correctly. Here the
update goes on the weight directly: every nn.Linear weight, Mamba2's out_proj included, is
reparametrised as W + (B @ A) * lora_alpha / r (torch.nn.utils.parametrize).
Without dropout this is exactly loralib's Linear: same A (Kaiming uniform) and B (zeros)
initialisation, same scaling, same trainable set (only lora_A/lora_B; loralib's
`mark_only_lora_as_trainable` with bias "none").

Checkpoints: `model_state_dict` holds the merged weights (W + BA * scaling) under the plain
names, so the file loads in the separator and in MSST like any BSMamba2 checkpoint, without LoRA
flags. The adapter alone is in `lora_state_dict` (loralib's names: `<layer>.lora_A`, `.lora_B`),
which `--lora_checkpoint_loralib` loads back.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import TrainingConfigError

LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "merge_weights", "fan_in_fan_out", "enable_lora")
ORIGINAL = ".parametrizations.weight.original"
ADAPTER = ".parametrizations.weight.0."


class WeightLoRA(nn.Module):
    """weight -> weight + (lora_B @ lora_A) * scaling."""

    def __init__(self, out_features: int, in_features: int, r: int, alpha: float):
        super().__init__()
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # loralib's initialisation

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.lora_B @ self.lora_A).to(weight.dtype) * self.scaling


def lora_settings(section: Mapping[str, Any] | None) -> tuple[int, float]:
    """(r, lora_alpha) from MSST's `lora:` section; keys this cannot honour are errors or warnings."""
    if not section:
        raise TrainingConfigError("--train_lora_loralib needs a `lora:` section in the config (r, lora_alpha, ...), "
                                  "as in MSST")
    section = dict(section)
    unknown = sorted(set(section) - set(LORA_KEYS))
    if unknown:
        raise TrainingConfigError(f"lora.{unknown[0]}: not a loralib Linear key; known: {list(LORA_KEYS)}")
    if "r" not in section or int(section["r"]) < 1:
        raise TrainingConfigError(f"lora.r must be a positive rank, got {section.get('r')!r}")
    if section.get("fan_in_fan_out", False):
        raise TrainingConfigError("lora.fan_in_fan_out: true is for GPT-2 style Conv1D weights; BSMamba2 uses "
                                  "nn.Linear (set it to false)")
    enable = section.get("enable_lora", [True])
    if not all(bool(e) for e in (enable if isinstance(enable, (list, tuple)) else [enable])):
        raise TrainingConfigError(f"lora.enable_lora={enable}: partial enabling is for merged QKV layers "
                                  f"(roformers); BSMamba2 has none, use [True]")
    if float(section.get("lora_dropout", 0.0) or 0.0) > 0:
        warnings.warn(f"lora.lora_dropout={section['lora_dropout']} is not applied: the adapter acts on the "
                      f"weights (see bsmamba2_plugin/train/lora.py), and input dropout has no weight-space form",
                      stacklevel=2)
    return int(section["r"]), float(section.get("lora_alpha", 1.0))


def attach_lora(model: nn.Module, r: int, alpha: float) -> list[str]:
    """Reparametrise every nn.Linear weight with a LoRA update; freeze everything else.

    Returns the adapted layer names."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            adapter = WeightLoRA(module.out_features, module.in_features, r, alpha)
            parametrize.register_parametrization(module, "weight", adapter.to(module.weight.device))
            names.append(name)
    if not names:
        raise TrainingConfigError("--train_lora_loralib: the model has no nn.Linear layer to adapt")
    return names


def merged_state_dict(state: Mapping[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """A LoRA model's state dict (parametrised names) -> plain names with W + B @ A * scaling."""
    merged: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(ORIGINAL):
            layer = key[: -len(ORIGINAL)]
            a, b = state[layer + ADAPTER + "lora_A"], state[layer + ADAPTER + "lora_B"]
            merged[layer + ".weight"] = (value.float() + (b.float() @ a.float()) * scaling).to(value.dtype)
        elif ADAPTER not in key:
            merged[key] = value
    return merged


def adapter_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The adapter alone, in loralib's names (`<layer>.lora_A`, `<layer>.lora_B`)."""
    return {key.replace(ADAPTER, "."): value for key, value in state.items() if ADAPTER in key}


def load_adapter(model: nn.Module, adapter: Mapping[str, Tensor], origin: str) -> int:
    """--lora_checkpoint_loralib: loralib-named tensors into the attached adapters (all must fit)."""
    state = model.state_dict()
    wanted = {key.replace(ADAPTER, "."): key for key in state if ADAPTER in key}
    adapter = {k: v for k, v in adapter.items() if k.endswith((".lora_A", ".lora_B"))}
    unknown = sorted(set(adapter) - set(wanted))
    misfit = [k for k in adapter if k in wanted and tuple(adapter[k].shape) != tuple(state[wanted[k]].shape)]
    if not adapter or unknown or misfit:
        raise TrainingConfigError(
            f"{origin} does not fit this model's LoRA layers (r from lora.r): "
            f"{'no lora_A/lora_B tensors' if not adapter else ''}"
            f"{' unknown: ' + ', '.join(unknown[:5]) if unknown else ''}"
            f"{' shape mismatch: ' + ', '.join(misfit[:5]) if misfit else ''}")
    model.load_state_dict({**state, **{wanted[k]: v for k, v in adapter.items()}}, strict=True)
    return len(adapter)


class WeightSpaceLoRA:
    """The trainer's view of an attached --train_lora_loralib adapter (lora_alpha / r)."""

    library = "loralib"

    def __init__(self, scaling: float):
        self.scaling = scaling

    def merged_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return merged_state_dict(state, self.scaling)

    def adapter_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return adapter_state_dict(state)
