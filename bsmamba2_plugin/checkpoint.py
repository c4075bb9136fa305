"""Reading BSMamba2 weights from any checkpoint layout the MSST world produces.

Accepted: a plain state dict; MSST's training dict (`model_state_dict`, also `state` and
`state_dict`); a PyTorch Lightning checkpoint of the official code (`state_dict`, keys
prefixed `model.`); `.safetensors`. `torch.load` always runs with `weights_only=True`:
opening a checkpoint must never execute code from it.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import BSMamba2

# Wrappers that prefix every key: DDP, torch.compile, Lightning (`model.` = official code).
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the model."""


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model weights in `path`, whatever the layout, with wrapper prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = load_weights_only(path)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    return unwrap_state_dict(raw, origin=str(path))


class InertObject:
    """Stands in for a class a checkpoint names but that must not run (e.g. OmegaConf's
    DictConfig in a Lightning checkpoint's `hyper_parameters`): it only keeps what it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.items = args, kwargs, {}

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)


def load_weights_only(path: Path) -> Any:
    """torch.load with weights_only=True; objects of other classes become InertObjects.

    Lightning checkpoints of the official code pickle their OmegaConf hyper-parameters,
    which weights_only refuses. The second attempt maps every class the file names to an
    inert stand-in, still under weights_only=True, so nothing from the file runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not names:
            raise
        stand_ins = [
            (type(name.rsplit(".", 1)[-1], (InertObject,), {"__module__": name.rsplit(".", 1)[0]}), name)
            for name in names
        ]
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"checkpoint {path} can only be opened by running code it names ({', '.join(names)}); "
                "refused. Re-save its weights as a plain state dict or .safetensors"
            ) from error


def unwrap_state_dict(raw: Any, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{origin} holds a {type(raw).__name__}, expected a dict of weights")
    for key in ("model_state_dict", "state_dict", "state"):
        if key in raw and isinstance(raw[key], Mapping):
            raw = raw[key]
            break
    weights = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise CheckpointError(f"{origin} contains no tensors (keys: {', '.join(map(str, list(raw)[:8]))})")
    # Lightning checkpoints also hold the featurizer's buffers etc.; keep only the model's.
    if any(k.startswith("model.") for k in weights) and not all(k.startswith("model.") for k in weights):
        weights = {k: v for k, v in weights.items() if k.startswith("model.")}
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items()}
    return weights


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> None:
    """Copy `weights` into `model`, naming every missing, unexpected or misshapen key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        lines = [f"{origin} does not fit the model built from the config:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshapen)):
            if keys:
                shown = keys[:10] + ([f"... and {len(keys) - 10} more"] if len(keys) > 10 else [])
                lines.append(f"  {title} ({len(keys)}): " + "; ".join(shown))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(dict(weights), strict=True)


def load_model(
    config: Mapping[str, Any] | Any | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> BSMamba2:
    """Build BSMamba2 from an MSST config (path, ConfigDict or dict) and load `checkpoint` into it."""
    if isinstance(config, (str, os.PathLike)):
        from .config import load_config

        config = load_config(config)
    model = BSMamba2.from_config(config)
    if checkpoint is not None:
        load_weights(model, read_state_dict(checkpoint), origin=f"checkpoint {checkpoint}")
    return model.to(device).eval()
