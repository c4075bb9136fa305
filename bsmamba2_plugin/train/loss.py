"""The paper's training loss.

    loss = w_wave * L1(estimate, reference)
         + w_res * sum over windows W of mean |STFT_W(estimate) - STFT_W(reference)|

with the complex STFT (Hann window W, n_fft = max(W, model n_fft), hop multi_stft_hop_size,
center=True), |.| the complex modulus, w_wave = training.waveform_loss_weight (paper: 10)
and w_res = model.multi_stft_resolution_loss_weight (paper: 1). Computed in float32 even
under autocast: bf16 STFT differences lose the quiet high bands.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import TrainingConfigError


class PaperLoss(nn.Module):
    def __init__(self, loss_settings: Mapping[str, Any], waveform_weight: float = 10.0):
        super().__init__()
        self.waveform_weight = float(waveform_weight)
        self.resolution_weight = float(loss_settings["resolution_weight"])
        self.window_sizes = tuple(int(w) for w in loss_settings["window_sizes"])
        self.hop = int(loss_settings["hop_size"])
        self.normalized = bool(loss_settings["normalized"])
        self.min_n_fft = int(loss_settings["n_fft"])
        for size in self.window_sizes:
            self.register_buffer(f"window_{size}", torch.hann_window(size), persistent=False)

    def check_length(self, samples: int) -> None:
        """STFT's reflect padding needs more than n_fft // 2 samples."""
        longest = max((max(w, self.min_n_fft) for w in self.window_sizes), default=0)
        if self.resolution_weight and samples <= longest // 2:
            raise TrainingConfigError(
                f"audio.chunk_size={samples} is too short for the multi-resolution loss: the largest STFT "
                f"(n_fft {longest}) needs more than {longest // 2} samples; raise chunk_size or shrink "
                f"model.multi_stft_resolutions_window_sizes"
            )

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        """estimate, reference: (batch, stems, channels, samples)."""
        if estimate.shape != reference.shape:
            raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
        with torch.autocast(device_type=estimate.device.type, enabled=False):
            estimate, reference = estimate.float(), reference.float()
            loss = self.waveform_weight * (estimate - reference).abs().mean()
            if self.resolution_weight:
                flat_est = estimate.reshape(-1, estimate.shape[-1])
                flat_ref = reference.reshape(-1, reference.shape[-1])
                spectral = estimate.new_zeros(())
                for size in self.window_sizes:
                    kwargs = dict(n_fft=max(size, self.min_n_fft), hop_length=self.hop, win_length=size,
                                  window=getattr(self, f"window_{size}"), normalized=self.normalized,
                                  center=True, return_complex=True)
                    difference = torch.stft(flat_est, **kwargs) - torch.stft(flat_ref, **kwargs)
                    spectral = spectral + difference.abs().mean()
                loss = loss + self.resolution_weight * spectral
        return loss
