"""Exponential moving average of the model's weights (paper: decay 0.999, every optimizer step)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class WeightEMA:
    """shadow <- decay * shadow + (1 - decay) * weight, over the model's whole state dict.

    Starts as a copy of the weights (as torch's AveragedModel does on its first update).
    Integer buffers, if any, are copied rather than averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"training.ema_momentum must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone().cpu() for k, v in self.shadow.items()}

    def load_state_dict(self, weights: Mapping[str, Tensor], updates: int) -> None:
        missing = set(self.shadow) ^ set(weights)
        if missing:
            raise KeyError(f"EMA weights do not fit the model (keys differ: {sorted(missing)[:5]})")
        for name, value in weights.items():
            self.shadow[name].copy_(value)
        self.updates = int(updates)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)
