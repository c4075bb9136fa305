"""Optimizer and scheduler from MSST's config keys (training.optimizer, training.lr, `optimizer:` section)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .errors import TrainingConfigError

TORCH_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
                    "rmsprop": torch.optim.RMSprop}


def build_optimizer(config: Any, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name = str(config.training.get("optimizer", "adam"))
    options = dict(config["optimizer"]) if "optimizer" in config else {}
    lr = float(config.training.lr)
    if name in TORCH_OPTIMIZERS:
        try:
            return TORCH_OPTIMIZERS[name](parameters, lr=lr, **options)
        except TypeError as error:
            raise TrainingConfigError(f"the config's optimizer section {options} does not fit {name}: {error}") from error
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError as error:
            raise TrainingConfigError("training.optimizer: prodigy needs `pip install prodigyopt`") from error
        return Prodigy(parameters, lr=lr, **options)
    raise TrainingConfigError(
        f"training.optimizer={name!r} is not supported by bsmamba2_plugin.train; choose one of "
        f"{sorted(TORCH_OPTIMIZERS) + ['prodigy']} (the paper uses adamw)"
    )


def build_scheduler(config: Any, optimizer: torch.optim.Optimizer) -> ReduceLROnPlateau:
    """MSST's default: ReduceLROnPlateau on the validation metric (mode max), patience and factor from training."""
    name = str(config.training.get("scheduler", "ReduceLROnPlateau"))
    if name != "ReduceLROnPlateau":
        raise TrainingConfigError(
            f"training.scheduler={name!r}: bsmamba2_plugin.train implements ReduceLROnPlateau only "
            f"(set a huge training.patience for a constant learning rate, as the paper)"
        )
    return ReduceLROnPlateau(optimizer, "max", patience=int(config.training.get("patience", 2)),
                             factor=float(config.training.get("reduce_factor", 0.95)))
