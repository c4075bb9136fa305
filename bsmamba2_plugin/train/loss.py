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

from bsmamba2_plugin import snr_losses
from bsmamba2_plugin.settings import number_in, sample_rate, true_or_false

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

    def describe(self) -> str:
        windows = "/".join(str(w) for w in self.window_sizes)
        return (f"the paper's: {self.waveform_weight:g} x L1(waveform) + {self.resolution_weight:g} x "
                f"multi-resolution complex STFT L1 (windows {windows}, hop {self.hop})")

    def forward(self, estimate: Tensor, reference: Tensor, mixture: Tensor | None = None) -> Tensor:
        """estimate, reference: (batch, stems, channels, samples); the mixture is not used."""
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


# ----------------------------------------------------------------------------------------------
# MSST's `--loss` choices (utils/losses.py choice_loss), summed with their `--<name>_coef`.

MSST_LOSSES = ("masked_loss", "mse_loss", "l1_loss", "multistft_loss", "spec_masked_loss", "spec_rmse_loss",
               "log_wmse_loss", "l1_snr_loss", "l1_snr_db_loss", "stft_l1_snr_db_loss", "multi_l1_snr_db_loss")
COEF_DEFAULTS = {name: (0.001 if name == "multistft_loss" else 1.0) for name in MSST_LOSSES}
# torch-l1-snr's classes with MSST's arguments (name only: the libraries' defaults), in plain torch
L1_SNR_LOSSES = {"l1_snr_loss": snr_losses.l1_snr, "l1_snr_db_loss": snr_losses.l1_snr_db,
                 "stft_l1_snr_db_loss": snr_losses.stft_l1_snr_db, "multi_l1_snr_db_loss": snr_losses.multi_l1_snr_db}


def quantile_masked_mean(loss: Tensor, q: float) -> Tensor:
    """MSST's masking: per row, drop the values at or above the row's q-quantile, then mean of all."""
    loss = loss.reshape(loss.shape[0], -1)
    threshold = torch.quantile(loss.detach(), q, interpolation="linear", dim=1, keepdim=True)
    return (loss * (loss < threshold)).mean()


def masked_loss(estimate: Tensor, reference: Tensor, q: float, coarse: bool) -> Tensor:
    """MSST's masked_loss: squared error per (stem, batch item) [coarse] or per sample, quantile-masked."""
    loss = (estimate - reference).square().transpose(0, 1)  # (stems, batch, channels, samples)
    if coarse:
        loss = loss.mean(dim=(-1, -2))
    return quantile_masked_mean(loss, q)


def _spectra(estimate: Tensor, reference: Tensor, stft: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Complex STFTs as (..., freq, frames, 2), shaped like the input's leading dims."""
    length = estimate.shape[-1]
    window = torch.ones(int(stft["win_length"]), device=estimate.device)  # MSST passes none: rectangular

    def one(x: Tensor) -> Tensor:
        spec = torch.stft(x.reshape(-1, length), n_fft=stft["n_fft"], hop_length=stft["hop_length"],
                          win_length=stft["win_length"], window=window, center=True,
                          normalized=stft["normalized"], return_complex=True)
        spec = torch.view_as_real(spec)
        return spec.reshape(*x.shape[:-1], *spec.shape[-3:])

    return one(estimate), one(reference)


def spec_rmse_loss(estimate: Tensor, reference: Tensor, stft: Mapping[str, Any], eps: float = 1e-8) -> Tensor:
    """MSST's spec_rmse_loss: RMSE over (channels, freq, frames, re/im) per (batch, stem), then the mean."""
    est, ref = _spectra(estimate, reference, stft)
    loss = (est - ref).square()
    return (loss.mean(dim=tuple(range(2, loss.dim()))) + eps).sqrt().mean(dim=(0, 1))


def spec_masked_loss(estimate: Tensor, reference: Tensor, stft: Mapping[str, Any], q: float, coarse: bool) -> Tensor:
    """MSST's spec_masked_loss: squared spectral error, [coarse: mean over freq and frames], masked per batch item."""
    est, ref = _spectra(estimate, reference, stft)
    loss = (est - ref).square()
    if coarse:
        loss = loss.mean(dim=(-3, -2))
    return quantile_masked_mean(loss, q)


class MSSTLoss(nn.Module):
    """The sum MSST's train.py builds from `--loss` (each term times its `--<name>_coef`).

    Read from the config as MSST reads it: training.q and training.coarse_loss_clip (masked losses),
    the `loss_multistft` section (auraloss.freq.MultiResolutionSTFTLoss keywords), model.nfft /
    hop_size / win_size / normalized for the spectral losses (absent in a bsmamba2 model section,
    so MSST's defaults 4096 / 1024 / 4096 / True apply), training.bypass_filter (log_wmse).
    """

    def __init__(self, names: list[str], coefficients: Mapping[str, float], config: Any):
        super().__init__()
        unknown = [n for n in names if n not in MSST_LOSSES]
        if unknown:
            raise TrainingConfigError(f"--loss {unknown}: choose from {list(MSST_LOSSES)}")
        self.names = list(dict.fromkeys(names))
        self.coefficients = {n: float(coefficients.get(n, COEF_DEFAULTS[n])) for n in self.names}
        training, model = config.training, config.get("model", {}) or {}
        if {"masked_loss", "spec_masked_loss"} & set(self.names):
            for key in ("q", "coarse_loss_clip"):
                if key not in training:
                    raise TrainingConfigError(f"--loss masked_loss / spec_masked_loss need training.{key} (as in MSST)")
            self.q = number_in(training.q, "training.q", 0, 1)  # the quantile of the losses kept
            self.coarse = true_or_false(training.coarse_loss_clip, "training.coarse_loss_clip")
        self.stft = {"n_fft": int(model.get("nfft", 4096)), "hop_length": int(model.get("hop_size", 1024)),
                     "win_length": int(model.get("win_size", 4096)), "normalized": bool(model.get("normalized", True))}
        self.terms = nn.ModuleDict()
        if "multistft_loss" in self.names:
            from auraloss.freq import MultiResolutionSTFTLoss

            options = dict(config.get("loss_multistft", {}) or {})
            try:
                self.terms["multistft_loss"] = MultiResolutionSTFTLoss(**options)
            except TypeError as error:
                raise TrainingConfigError(f"the loss_multistft section {options} does not fit auraloss's "
                                          f"MultiResolutionSTFTLoss: {error}") from error
        if "log_wmse_loss" in self.names:
            self.log_wmse_rate = sample_rate(config)
            self.bypass_filter = true_or_false(training.get("bypass_filter", False), "training.bypass_filter")
            try:
                snr_losses.check_log_wmse_available(self.log_wmse_rate, self.bypass_filter)
            except (RuntimeError, ValueError) as error:
                raise TrainingConfigError(f"--loss log_wmse_loss: {error}") from error

    def describe(self) -> str:
        return " + ".join(f"{self.coefficients[n]:g} x {n}" for n in self.names) + " (MSST's --loss)"

    def check_length(self, samples: int) -> None:
        if {"spec_masked_loss", "spec_rmse_loss"} & set(self.names) and samples <= self.stft["n_fft"] // 2:
            raise TrainingConfigError(
                f"audio.chunk_size={samples} is too short for the spectral losses' n_fft {self.stft['n_fft']}")

    def term(self, name: str, estimate: Tensor, reference: Tensor, mixture: Tensor | None) -> Tensor:
        if name == "masked_loss":
            return masked_loss(estimate, reference, self.q, self.coarse)
        if name == "mse_loss":
            return nn.functional.mse_loss(estimate, reference)
        if name == "l1_loss":
            return nn.functional.l1_loss(estimate, reference)
        if name == "multistft_loss":
            b = estimate.shape[0]
            return self.terms[name](estimate.reshape(b, -1, estimate.shape[-1]),
                                    reference.reshape(b, -1, reference.shape[-1]))
        if name == "spec_rmse_loss":
            return spec_rmse_loss(estimate, reference, self.stft)
        if name == "spec_masked_loss":
            return spec_masked_loss(estimate, reference, self.stft, self.q, self.coarse)
        if name == "log_wmse_loss":
            if mixture is None:
                raise ValueError("log_wmse_loss needs the mixture")
            # torch-log-wmse's layout: mixture [batch, channel, time], stems [batch, channel, stem, time]
            return -snr_losses.log_wmse(mixture, estimate.transpose(1, 2), reference.transpose(1, 2),
                                        self.log_wmse_rate, self.bypass_filter)
        return L1_SNR_LOSSES[name](estimate, reference)

    def forward(self, estimate: Tensor, reference: Tensor, mixture: Tensor | None = None) -> Tensor:
        if estimate.shape != reference.shape:
            raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
        with torch.autocast(device_type=estimate.device.type, enabled=False):  # as PaperLoss: float32
            estimate, reference = estimate.float(), reference.float()
            mixture = None if mixture is None else mixture.float()
            total = estimate.new_zeros(())
            for name in self.names:
                total = total + self.term(name, estimate, reference, mixture) * self.coefficients[name]
        return total

