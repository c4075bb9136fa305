"""LoRA through peft (`--train_lora_peft`, `--lora_checkpoint_peft`), with MSST's meaning.

As MSST's train.py: `peft.LoraConfig(**config['lora'])` and `get_peft_model`, or, with
`--lora_checkpoint_peft FOLDER`, `PeftModel.from_pretrained(model, FOLDER)` with the LoRA
parameters trainable (the folder's adapter_config.json then gives the settings). peft wraps the
selected nn.Linear layers; BSMamba2's batched products read every layer through
`bsmamba2_plugin.model.linear_weight`, so the adapters act everywhere, Mamba2's in_proj and
out_proj included.

What the batched products cannot honour is refused, naming the key: DoRA (`lora.use_dora`), LoRA
biases (`lora.lora_bias`), trainable base biases (`lora.bias`), `lora.modules_to_save`,
`lora.target_parameters`, initialisations that rewrite the base weights (`lora.init_lora_weights`
other than true, false, "gaussian") and target modules that are not nn.Linear. `lora.lora_dropout`
above 0 is not applied (input dropout has no weight-space form): a warning says so and the dropout
layers are replaced by identities, so every path trains the same way.

`lora.target_modules` is required (as peft requires it for a model that is not a transformers
model); `all-linear`, which peft allows for transformers models only, is expanded here to every
nn.Linear of BSMamba2.

Checkpoints (trainer.py): `model_state_dict` holds the merged weights under plain BSMamba2 names
(the separator and MSST's inference.py load it without flags); beside each checkpoint the adapter
is a peft folder `<checkpoint file name>_lora_` (MSST's train.py name for it: adapter_config.json,
adapter_model.safetensors),
and `lora_base_bsmamba2.ckpt` in the results folder holds the un-merged base weights, so MSST's
`valid.py --start_check_point lora_base_bsmamba2.ckpt --lora_checkpoint_peft <folder>` rebuilds the
merged model.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from bsmamba2_plugin.atomic_file import atomic_path
from bsmamba2_plugin.model.linear_weight import is_peft_layer

from .errors import TrainingConfigError

INSTALL = "pip install 'bsmamba2-plugin[lora]' (or pip install peft)"
PEFT_FOLDER_SUFFIX = "_lora_"  # MSST's save_weights: model.save_pretrained(store_path + '_lora_')
BASE_CHECKPOINT = "lora_base_bsmamba2.ckpt"
# peft's own prefix of a PeftModel's state-dict names, which save_pretrained expects.
PEFT_PREFIX = "base_model.model."
# init_lora_weights values that only set A and B (the others rewrite the base weights or need data).
PLAIN_INITS = (True, False, "gaussian")


def import_peft(flag: str) -> Any:
    try:
        import peft
    except ImportError as error:
        raise TrainingConfigError(f"{flag} needs the peft package: {INSTALL} ({error})") from error
    return peft


def peft_folder_for(checkpoint: str | Path) -> Path:
    """The adapter folder written beside a checkpoint, named as MSST names it: <file name>_lora_."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + PEFT_FOLDER_SUFFIX)


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def plain_value(value: Any) -> Any:
    """A YAML value as LoraConfig takes it: ConfigDict -> dict, tuple -> list."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return list(value) if isinstance(value, tuple) else value


def refuse_unhonoured(settings: Mapping[str, Any], origin: str) -> None:
    """Raise for LoRA settings BSMamba2's batched products cannot apply (`origin`: lora or a folder)."""
    refused = {
        "use_dora": "DoRA rescales each layer's output by a weight norm, which the batched products do not apply",
        "lora_bias": "a LoRA bias on Mamba2's bias-free projections is not supported",
        "modules_to_save": "whole-module copies are not supported; train those layers without LoRA "
                           "(--freeze_layers) or add them to lora.target_modules",
        "target_parameters": "parameter-level LoRA is not supported; use lora.target_modules (nn.Linear layers)",
        "use_alora": "aLoRA is not supported",
    }
    for key, reason in refused.items():
        if settings.get(key):
            raise TrainingConfigError(f"{origin}.{key}={settings[key]!r}: {reason}")
    if settings.get("bias", "none") not in ("none", None):
        raise TrainingConfigError(f"{origin}.bias={settings['bias']!r}: only 'none' is supported (trainable base "
                                  f"biases would change the base that lora_base_bsmamba2.ckpt holds)")


def lora_config(peft: Any, section: Mapping[str, Any] | None, model: nn.Module) -> Any:
    """peft.LoraConfig(**section), every problem named by its `lora.<key>`."""
    if not section:
        raise TrainingConfigError("--train_lora_peft needs a `lora:` section in the config: peft LoraConfig keys, "
                                  "e.g. r, lora_alpha, target_modules")
    section = {key: plain_value(value) for key, value in dict(section).items()}
    known = {f.name for f in dataclasses.fields(peft.LoraConfig) if f.init}
    unknown = sorted(set(section) - known)
    if unknown:
        hint = (" (merge_weights and enable_lora are loralib keys, for --train_lora_loralib)"
                if set(unknown) & {"merge_weights", "enable_lora"} else "")
        raise TrainingConfigError(f"lora.{unknown[0]}: not a peft LoraConfig key{hint}")
    refuse_unhonoured(section, "lora")
    r = section.get("r", 8)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise TrainingConfigError(f"lora.r must be a positive rank, got {r!r}")
    init = section.get("init_lora_weights", True)
    if init not in PLAIN_INITS:
        raise TrainingConfigError(f"lora.init_lora_weights={init!r}: only true, false or 'gaussian' (the others "
                                  f"rewrite the base weights or need data)")
    targets = section.get("target_modules")
    if not targets:
        raise TrainingConfigError("lora.target_modules is required with --train_lora_peft (peft needs it for a "
                                  "model that is not a transformers model): e.g. [in_proj, out_proj] for the Mamba2 "
                                  "projections, or all-linear for every nn.Linear")
    if targets == "all-linear":
        section["target_modules"] = linear_names(model)
    try:
        return peft.LoraConfig(**section)
    except (TypeError, ValueError) as error:
        raise TrainingConfigError(f"lora: {error}") from error


@dataclasses.dataclass
class PeftLoRA:
    """The peft model around the trainer's BSMamba2 (which peft adapts in place)."""

    peft_model: Any
    layers: dict[str, nn.Module]  # name in the BSMamba2 -> peft LoRA layer
    library = "peft"

    def merged_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of the adapted model (peft names) -> plain BSMamba2 names, adapters merged."""
        merged: dict[str, Tensor] = {}
        for key, value in state.items():
            if ".lora_" not in key:
                merged[key.replace(".base_layer.", ".")] = value
        for name, layer in self.layers.items():
            base = state[f"{name}.base_layer.weight"]
            weight = base.float()
            for adapter in layer.active_adapters:
                a, b = state[f"{name}.lora_A.{adapter}.weight"], state[f"{name}.lora_B.{adapter}.weight"]
                weight = weight + (b.float() @ a.float()) * layer.scaling[adapter]
            merged[f"{name}.weight"] = weight.to(base.dtype)
        return merged

    def base_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The un-merged base weights under plain names (what --lora_checkpoint_peft adapts)."""
        return {key.replace(".base_layer.", "."): value.detach().cpu() for key, value in state.items()
                if ".lora_" not in key}

    def adapter_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {key: value for key, value in state.items() if ".lora_" in key}

    def save_folder(self, state: Mapping[str, Tensor], folder: Path) -> Path:
        """save_pretrained of the adapter in `state` (the weights of the checkpoint beside it), atomically."""
        prefixed = {PEFT_PREFIX + key: value for key, value in self.adapter_state_dict(state).items()}
        with atomic_path(folder) as temporary:
            self.peft_model.save_pretrained(str(temporary), state_dict=prefixed)
        return folder


def attach_peft(model: nn.Module, section: Mapping[str, Any] | None, checkpoint: str) -> tuple[PeftLoRA, str]:
    """--train_lora_peft (and --lora_checkpoint_peft): adapt `model` in place. Returns (PeftLoRA, summary line)."""
    peft = import_peft("--train_lora_peft")
    if checkpoint:
        folder = Path(checkpoint)
        if not (folder / "adapter_config.json").is_file():
            beside = peft_folder_for(folder) if folder.suffix == ".ckpt" else None
            hint = f"; the adapter of {folder.name} is the folder {beside}" if beside is not None else ""
            raise TrainingConfigError(f"--lora_checkpoint_peft {folder}: not a peft adapter folder (no "
                                      f"adapter_config.json){hint}")
        refuse_unhonoured(json.loads((folder / "adapter_config.json").read_text()), f"{folder}/adapter_config.json")
        try:
            peft_model = peft.PeftModel.from_pretrained(model, str(folder), is_trainable=True)
        except (ValueError, RuntimeError, KeyError) as error:
            raise TrainingConfigError(f"--lora_checkpoint_peft {folder} does not fit this model: {error}") from error
        origin = f"adapter from {folder}"
    else:
        config = lora_config(peft, section, model)
        _refuse_layers(not_linear(config, model))
        try:
            peft_model = peft.get_peft_model(model, config)
        except ValueError as error:
            raise TrainingConfigError(f"lora: {error}") from error
        origin = f"r={config.r}, lora_alpha={config.lora_alpha:g}"
    layers = {name: module for name, module in model.named_modules() if is_peft_layer(module)}
    _refuse_layers({name: layer.base_layer for name, layer in layers.items()
                    if not isinstance(layer.base_layer, nn.Linear)})
    if not layers:
        raise TrainingConfigError("lora.target_modules selects no layer of BSMamba2")
    dropout = _drop_dropout(layers)
    if dropout:
        warnings.warn(f"lora.lora_dropout={dropout} is not applied: BSMamba2 applies the adapters in weight space "
                      f"(see bsmamba2_plugin/train/peft_lora.py), and input dropout has no weight-space form",
                      stacklevel=2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kinds: dict[str, int] = {}
    for name in layers:
        kind = layer_kind(name)
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = (f"LoRA (peft {peft.__version__}): {origin} on {len(layers)} linear layers "
               f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); {trainable} trainable parameters")
    return PeftLoRA(peft_model, layers), summary


def not_linear(config: Any, model: nn.Module) -> dict[str, nn.Module]:
    """The modules `config.target_modules` selects that are not nn.Linear (peft's own matching)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return {name: module for name, module in model.named_modules()
            if name and not isinstance(module, nn.Linear) and check_target_module_exists(config, name)}


def _refuse_layers(wrong: Mapping[str, nn.Module]) -> None:
    if wrong:
        listed = ", ".join(f"{name} ({type(module).__name__})" for name, module in list(wrong.items())[:5])
        raise TrainingConfigError(f"lora.target_modules selects layers that are not nn.Linear: {listed}; BSMamba2 "
                                  f"reads those weights directly, only nn.Linear layers can be adapted")


def layer_kind(name: str) -> str:
    """A linear layer's role in BSMamba2, for the start-up summary."""
    if name.startswith("band_split."):
        return "band split"
    if name.startswith("mask_estimators."):
        return "mask estimator"
    return name.rsplit(".", 1)[-1]


def _drop_dropout(layers: Mapping[str, nn.Module]) -> float:
    """Replace the adapters' dropout layers by identities; returns the largest p replaced (0: none)."""
    largest = 0.0
    for layer in layers.values():
        for adapter, dropout in list(layer.lora_dropout.items()):
            if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                largest = max(largest, dropout.p)
                layer.lora_dropout[adapter] = nn.Identity()
    return largest


def save_base_checkpoint(state: Mapping[str, Tensor], path: Path) -> None:
    from .checkpoints import save_atomically

    save_atomically({"model_state_dict": dict(state), "model_type": "bsmamba2",
                     "note": "un-merged base weights of a --train_lora_peft run; add the adapter with "
                             f"--lora_checkpoint_peft <checkpoint>{PEFT_FOLDER_SUFFIX}"}, path)


