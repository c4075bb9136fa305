"""Optimizer and scheduler from MSST's config keys (training.optimizer, training.lr, `optimizer:` section,
training.scheduler with training.patience / reduce_factor or training.num_warmup_steps)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from ..settings import number_in, whole_number
from .errors import TrainingConfigError

TORCH_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
                    "rmsprop": torch.optim.RMSprop}


REFUSED_OPTIMIZERS = {
    "muon": "MSST's own Muon (utils/muon.py, on pytorch_optimizer) is not packaged; train with MSST's train.py",
    "adago": "MSST's own AdaGO (utils/muon.py, on pytorch_optimizer) is not packaged; train with MSST's train.py",
}


def build_optimizer(config: Any, parameters: Iterable[torch.nn.Parameter],
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    name = str(config.training.get("optimizer", "adam"))
    options = dict(config["optimizer"]) if "optimizer" in config else {}
    lr = number_in(config.training.lr, "training.lr", 0, low_open=True)
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
    if name == "adamw8bit":
        if device is None or device.type != "cuda":
            raise TrainingConfigError(
                f"training.optimizer: adamw8bit (bitsandbytes) runs on CUDA only; this run is on "
                f"{device or 'cpu'}: choose adamw")
        try:
            import bitsandbytes
        except Exception as error:  # noqa: BLE001
            raise TrainingConfigError(
                f"training.optimizer: adamw8bit needs `pip install bitsandbytes` ({error})") from error
        return bitsandbytes.optim.AdamW8bit(parameters, lr=lr, **options)
    if name in REFUSED_OPTIMIZERS:
        raise TrainingConfigError(f"training.optimizer={name!r}: {REFUSED_OPTIMIZERS[name]}")
    raise TrainingConfigError(
        f"training.optimizer={name!r} is not supported by bsmamba2_plugin.train; choose one of "
        f"{sorted(TORCH_OPTIMIZERS) + ['prodigy', 'adamw8bit']} (the paper uses adamw)"
    )


class LinearWarmupDecay:
    """transformers' get_linear_schedule_with_warmup factor: 0 -> 1 over the warm-up steps, then
    linearly to 0 at the last step. A class, not a lambda, so the scheduler's state stays plain data."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


def build_scheduler(config: Any, optimizer: torch.optim.Optimizer) -> ReduceLROnPlateau | LRScheduler:
    """MSST's choices: ReduceLROnPlateau on the validation metric (mode max; the default), or
    linear_scheduler (warm-up then linear decay, stepped after every optimizer step as in MSST's loop;
    total = num_epochs x num_steps batches, as MSST counts it)."""
    training = config.training
    name = str(training.get("scheduler", "ReduceLROnPlateau"))
    if name == "linear_scheduler":
        if "num_warmup_steps" not in training:
            raise TrainingConfigError(
                "training.scheduler: linear_scheduler needs training.num_warmup_steps (as in MSST)")
        total = int(training.num_epochs) * int(training.num_steps)
        warmup = whole_number(training.num_warmup_steps, "training.num_warmup_steps")
        return LambdaLR(optimizer, LinearWarmupDecay(warmup, total))
    if name != "ReduceLROnPlateau":
        raise TrainingConfigError(
            f"training.scheduler={name!r}: choose ReduceLROnPlateau (MSST's default; set a huge training.patience "
            f"for a constant learning rate, as the paper) or linear_scheduler"
        )
    return ReduceLROnPlateau(optimizer, "max", patience=whole_number(training.get("patience", 2), "training.patience"),
                             factor=number_in(training.get("reduce_factor", 0.95), "training.reduce_factor", 0, 1,
                                              low_open=True, high_open=True))
