"""Running chunks through a separation model, as MSST's demix does around its model call."""
from __future__ import annotations

from typing import Any

import torch

from bsmamba2_plugin.settings import InferenceSettings


def model_channels(model: Any) -> int | None:
    inner = model.module if hasattr(model, "module") else model
    channels = getattr(inner, "audio_channels", None)
    return int(channels) if channels is not None else None


def duplicates_mono(model: Any, channels: int) -> bool:
    """Whether a mixture with ``channels`` channels is duplicated to stereo for this model.

    MSST turns a mono mixture into two identical channels and keeps the first channel of each
    output; a model that itself declares one audio channel takes mono as it is.
    """
    expected = model_channels(model)
    if channels == 1 and expected != 1:
        return True
    if expected is not None and channels != expected:
        raise ValueError(
            f"the model takes {expected}-channel audio but the mixture has {channels} channels "
            f"(mono is duplicated automatically; downmix other layouts first)"
        )
    return False


class ModelRunner:
    """(chunks, channels, samples) -> (chunks, stems, channels, samples) float32 on the CPU.

    Mono is duplicated for a stereo model and the first channel kept; a model that returns every
    trained stem is reduced to ``training.target_instrument``; the call runs under inference mode
    and the chosen precision (`bsmamba2_plugin.precision`).
    """

    def __init__(self, model: Any, settings: InferenceSettings, device: torch.device, precision: Any):
        self.model = model
        self.settings = settings
        self.device = torch.device(device)
        self.precision = precision

    def check_channels(self, channels: int) -> None:
        duplicates_mono(self.model, channels)

    def __call__(self, chunks: torch.Tensor) -> torch.Tensor:
        from bsmamba2_plugin.precision import autocast

        duplicate = duplicates_mono(self.model, chunks.shape[1])
        if duplicate:
            chunks = chunks.repeat(1, 2, 1)
        with autocast(self.precision, self.device), torch.inference_mode():
            estimates = self.model(chunks)
        if not isinstance(estimates, torch.Tensor) or estimates.ndim != 4 or estimates.shape[0] != chunks.shape[0]:
            shape = tuple(estimates.shape) if isinstance(estimates, torch.Tensor) else type(estimates).__name__
            raise ValueError(f"the model must return (batch, stems, channels, samples); got {shape}")
        settings = self.settings
        if settings.target_index is not None and estimates.shape[1] == len(settings.all_instruments):
            estimates = estimates[:, settings.target_index:settings.target_index + 1]
        if estimates.shape[1] != len(settings.instruments):
            raise ValueError(f"the model returned {estimates.shape[1]} stems but the config names "
                             f"{len(settings.instruments)} ({list(settings.instruments)})")
        if duplicate:
            estimates = estimates[:, :, :1]
        return estimates.float().cpu()
