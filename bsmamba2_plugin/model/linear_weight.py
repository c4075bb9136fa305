"""The weight and bias a linear layer actually applies, for code that reads them instead of calling it.

BSMamba2's fast paths batch many projections into one product (per_band_linear, the fused
bidirectional in_proj, the stacked out_proj), so they read the layers' tensors rather than
calling the layers. A LoRA layer that adds its update to the layer's *output* would be skipped
there without a word; these functions give the weight the layer's own forward applies:

- a plain `nn.Linear` (also one whose weight is reparametrised with torch.nn.utils.parametrize,
  as the trainer's loralib path does): its `.weight` and `.bias`, no copy;
- a peft LoRA layer (`peft.tuners.lora.Linear`: `base_layer` plus adapters): the base layer's
  weight plus `get_delta_weight(name)` of every active adapter, unless the adapters are disabled
  or merged (then the base weight, as peft's forward uses it); `lora_B` biases (peft's
  `lora_bias`) go into the bias;
- a `loralib.Linear` with r > 0 that is not merged: weight + (lora_B @ lora_A) * scaling, with
  `fan_in_fan_out` respected.

Neither peft nor loralib is imported: the layers are recognised by their attributes. The adapters'
input dropout (`lora_dropout`) has no weight-space form and is not applied here; in training mode
with a dropout above 0 a warning says so once. LoRA variants (DoRA, aLoRA, ...) change the
output in ways a weight sum does not give and are refused with an error.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

__all__ = ["bias_free_weights", "effective_bias", "effective_weight", "is_linear", "is_peft_layer"]


def is_peft_layer(module: nn.Module) -> bool:
    """A peft LoRA layer (`base_layer` plus adapters), recognised without importing peft."""
    return isinstance(getattr(module, "base_layer", None), nn.Module) and hasattr(module, "get_delta_weight")


def _is_loralib_layer(module: nn.Module) -> bool:
    return isinstance(getattr(module, "lora_A", None), nn.Parameter) and hasattr(module, "merged")


def is_linear(module: nn.Module) -> bool:
    """An nn.Linear, or a LoRA wrapper around one (loralib.Linear is an nn.Linear; peft's is not)."""
    if isinstance(module, nn.Linear):
        return True
    return is_peft_layer(module) and is_linear(module.base_layer)


def _warn_dropout(module: nn.Module, p: float) -> None:
    if module.training and p > 0:
        warnings.warn(f"a LoRA layer's lora_dropout={p} is not applied where BSMamba2 reads the layer's weight "
                      f"(its batched band, in_proj and out_proj products; see bsmamba2_plugin/model/linear_weight.py)",
                      stacklevel=3)


def _active_peft_adapters(layer: nn.Module) -> list[str]:
    active = layer.active_adapters
    names = [active] if isinstance(active, str) else list(active)
    names = [name for name in names if name in layer.lora_A]
    variants = sorted(name for name in names if name in getattr(layer, "lora_variant", {}))
    if variants:
        kind = type(layer.lora_variant[variants[0]]).__name__
        raise NotImplementedError(f"LoRA variant {kind} (adapter {variants[0]!r}, e.g. use_dora) changes a layer's "
                                  f"output in ways a weight update does not give; BSMamba2's batched products "
                                  f"support plain LoRA only")
    return names


def _peft_updates(layer: nn.Module) -> list[tuple[str, float]]:
    """(adapter, sign) of the updates to add to the base layer's tensors, as peft's forward applies them."""
    if layer.disable_adapters:  # peft's forward unmerges merged adapters first, then runs the base alone
        return [(name, -1.0) for name in layer.merged_adapters]
    if layer.merged:  # the base layer already holds the updates
        return []
    return [(name, 1.0) for name in _active_peft_adapters(layer)]


def effective_weight(linear: nn.Module) -> Tensor:
    """(out_features, in_features): what `linear(x)` multiplies x by."""
    if type(linear) is nn.Linear:  # the plain model: the parameter itself, nothing computed
        return linear.weight
    if is_peft_layer(linear):
        weight = effective_weight(linear.base_layer)
        for name, sign in _peft_updates(linear):
            if sign > 0:
                _warn_dropout(linear, getattr(linear.lora_dropout[name], "p", 0.0))
            weight = weight + sign * linear.get_delta_weight(name).to(weight.dtype)
        return weight
    if _is_loralib_layer(linear):
        weight = linear.weight.transpose(0, 1) if linear.fan_in_fan_out else linear.weight
        if linear.r > 0 and not linear.merged:
            _warn_dropout(linear, getattr(linear.lora_dropout, "p", 0.0))
            weight = weight + (linear.lora_B @ linear.lora_A).to(weight.dtype) * linear.scaling
        return weight
    return linear.weight


def effective_bias(linear: nn.Module) -> Tensor | None:
    """(out_features,) or None: what `linear(x)` adds."""
    if type(linear) is nn.Linear:
        return linear.bias
    if is_peft_layer(linear):
        bias = effective_bias(linear.base_layer)
        for name, sign in _peft_updates(linear):
            extra = linear.lora_B[name].bias  # peft's lora_bias
            if extra is not None:
                term = sign * extra * linear.scaling[name]
                bias = term if bias is None else bias + term.to(bias.dtype)
        return bias
    return linear.bias


def stacked_linear(linears: list[nn.Module]) -> tuple[Tensor, Tensor | None]:
    """(k, out, in) weights and (k, out) biases (None when no layer has one) of k layers of equal shape."""
    weights = torch.stack([effective_weight(linear) for linear in linears])
    biases = [effective_bias(linear) for linear in linears]
    if all(b is None for b in biases):
        return weights, None
    return weights, torch.stack([b if b is not None else weights.new_zeros(weights.shape[1]) for b in biases])


def bias_free_weights(linears: list[nn.Module], what: str) -> Tensor:
    """stacked_linear's (k, out, in) weights of layers that have no bias (Mamba2's in_proj, out_proj);
    a LoRA bias on them (peft's lora_bias) would have nowhere to go in the batched products."""
    weights, biases = stacked_linear(linears)
    if biases is not None:
        raise NotImplementedError(f"Mamba2's {what} has no bias; a LoRA bias on it (peft's lora_bias) is not supported")
    return weights
