"""Training checkpoints in MSST's format and names, written atomically.

MSST's keys: model_state_dict, optimizer_state_dict, scheduler_state_dict, epoch,
best_metric, all_metrics, all_losses, optimizer_name. MSST's train.py, inference.py and
valid.py and `bsmamba2_plugin.checkpoint.load_model` read `model_state_dict`.

`model_state_dict` holds the EMA weights when training.ema_momentum > 0: they are the
weights validated, selected as best and meant for inference (the paper evaluates its EMA
weights). The raw weights the optimizer works on are in `raw_model_state_dict`, so a
resume continues exactly; with EMA off both are the same and only `model_state_dict` is
written. Everything is plain tensors/numbers/strings, loadable with weights_only=True.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsmamba2_plugin.atomic_file import atomic_path

MODEL_TYPE = "bsmamba2"
FORMAT_VERSION = 1


def last_checkpoint_path(results_path: str | os.PathLike[str]) -> Path:
    return Path(results_path) / f"last_{MODEL_TYPE}.ckpt"


def best_checkpoint_path(results_path: str | os.PathLike[str], epoch: int, metric: str, value: float,
                         per_stem: dict[str, list[float]] | None = None) -> Path:
    """MSST's names; with per_stem (--each_metrics_in_name) every stem's mean and std over tracks."""
    if per_stem:
        parts = "__".join(f"{stem}_{metric}_{np.mean(v):.4f}_std_{np.std(v):.4f}" for stem, v in per_stem.items())
        return Path(results_path) / f"model_{MODEL_TYPE}_ep_{epoch}_{parts}.ckpt"
    return Path(results_path) / f"model_{MODEL_TYPE}_ep_{epoch}_{metric}_{value:.4f}.ckpt"


def every_epoch_checkpoint_path(results_path: str | os.PathLike[str], epoch: int, averages: dict[str, float]) -> Path:
    """--save_weights_every_epoch: MSST's model_<type>_ep_<N>_<metric>_<value>... with every metric's average."""
    metrics = "".join(f"_{name}_{value:.4f}" for name, value in averages.items())
    return Path(results_path) / f"model_{MODEL_TYPE}_ep_{epoch}{metrics}.ckpt"


def save_atomically(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """torch.save through `bsmamba2_plugin.atomic_file`: a kill at any moment leaves either the old
    file or the new one, never a torn one."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def load_compatible_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """--load_only_compatible_weights: copy the tensors whose name and shape fit; the rest keep their
    initial values. Returns (loaded names, one line per tensor not loaded)."""
    own = model.state_dict()
    fitting = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}" if k in weights
               else f"{k}: not in the checkpoint" for k, v in own.items() if k not in fitting]
    skipped += [f"{k}: not in the model" for k in weights if k not in own]
    model.load_state_dict({**own, **fitting}, strict=True)
    return sorted(fitting), skipped


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states, as weights_only-loadable values."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def read_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint written by this trainer (or by MSST), without executing code from it."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
