"""MSST's l1_snr family (torch-l1-snr 0.2) and logWMSE (torch-log-wmse 1.x) in plain torch.

Both libraries import torchaudio at import time, and no torchaudio loads with the torch this
project runs on; the formulas themselves need only torch.stft and torch.fft (and, for logWMSE at
a rate other than 44.1 kHz, torchaudio's default resampling of the filter, written out here as
`resample`). Each quantity is written once here and used by the trainer's `--loss`
(train/loss.py) and by `--metrics` (metrics.py). Only the settings MSST uses are offered: the
libraries' defaults (l1_weight 0, no spectral level-matching, grad_scale 1, p 0, reduction "mean").

Inputs are batch-first, e.g. (batch, stems, channels, samples); values are per batch item, then
the batch mean, as the libraries reduce.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import numbers
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

L1SNR_EPS = 1e-3
DBRMS_EPS = 1e-8
LEVEL_LAMBDA0, LEVEL_DELTA_LAMBDA, LEVEL_MIN_DB = 0.1, 0.9, -60.0
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft = win_length, hop)
STFT_MIN_SAMPLES = 512

LOG_WMSE_SCALER, LOG_WMSE_EPS, LOG_WMSE_RMS_EPS = -4.0, 1e-8, 1e-8
LOG_WMSE_IR_RATE = 44100
RESAMPLE_LOWPASS_WIDTH, RESAMPLE_ROLLOFF = 6, 0.99  # torchaudio's Resample defaults
_IR_FILE, _IR_TAPS = "filter_ir.f32", 4000
_IR_SHA256 = "bc9950e4f6be2846bf178017a5cca1e5407244d7b255d60de17b882f304998ab"


def _check_pair(estimate: Tensor, reference: Tensor) -> None:
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
    if estimate.dim() < 2 or estimate.numel() == 0:
        raise ValueError(f"expected non-empty batch-first tensors, got shape {tuple(estimate.shape)}")


def _d1(error: Tensor, level: Tensor, eps: float = L1SNR_EPS) -> Tensor:
    """Per-row 10 log10((mean|error| + eps) / (mean|level| + eps)), rows = dim 0."""
    error, level = error.reshape(error.shape[0], -1), level.reshape(level.shape[0], -1)
    return 10.0 * torch.log10((error.abs().mean(dim=1) + eps) / (level.abs().mean(dim=1) + eps))


def l1_snr(estimate: Tensor, reference: Tensor) -> Tensor:
    """torch-l1-snr L1SNRLoss: batch mean of the D1 in dB (lower is better)."""
    _check_pair(estimate, reference)
    return _d1(estimate - reference, reference).mean()


def dbrms(x: Tensor, eps: float = DBRMS_EPS) -> Tensor:
    """Per batch item 20 log10 sqrt(mean x^2 + eps): eps inside the root sets silence at -80 dB."""
    x = x.reshape(x.shape[0], -1)
    return 20.0 * torch.log10(torch.sqrt(x.square().mean(dim=1) + eps))


def level_matching(estimate: Tensor, reference: Tensor) -> Tensor:
    """The adaptive level-matching term lambda * |L_est - L_ref| (arXiv:2501.16171), batch mean.

    lambda = lambda0 + delta * eta * clamp(R / (L_ref - L_min), 0, 1), eta = 1 only when the
    reference is louder than both the estimate and L_min; lambda carries no gradient."""
    level_ref, level_est = dbrms(reference), dbrms(estimate)
    gap = (level_est - level_ref).abs()
    louder = (level_ref > torch.clamp_min(level_est, LEVEL_MIN_DB)).to(gap.dtype)
    ratio = (gap / (level_ref - LEVEL_MIN_DB).clamp_min(1e-6)).clamp(0.0, 1.0)
    weight = (LEVEL_LAMBDA0 + louder * LEVEL_DELTA_LAMBDA * ratio).detach()
    return (weight * gap).mean()


def l1_snr_db(estimate: Tensor, reference: Tensor) -> Tensor:
    """torch-l1-snr L1SNRDBLoss: L1SNR plus the level-matching term (coefficient 1)."""
    _check_pair(estimate, reference)
    return l1_snr(estimate, reference) + level_matching(estimate, reference)


@lru_cache(maxsize=None)
def _unit_hann(n_fft: int) -> Tensor:
    # the library scales the window to unit L2 norm instead of normalized=True, from the float32 window
    # in float64: a float64 Hann differs in the last bits, which moved the gradient by 5e-4 (relative,
    # n_fft 2048 on 1 s) against the library's while the value agreed to 1e-7
    window = torch.hann_window(n_fft).double()
    return (window / window.square().sum().sqrt()).float()


def stft_l1_snr_db(estimate: Tensor, reference: Tensor) -> Tensor:
    """torch-l1-snr STFTL1SNRDBLoss: mean over resolutions of the batch mean of D1(real) + D1(imag).

    Complex STFTs of every (stem, channel) signal, Hann windows of unit norm, center with reflect
    padding. A resolution is skipped when the signal is shorter than n_fft // 2 + 1; with none left,
    or fewer than 512 samples, it is the time-domain l1_snr, as the library falls back. Non-finite
    input is replaced as the library does (NaN 0, +-inf +-1)."""
    _check_pair(estimate, reference)
    if not (torch.isfinite(estimate).all() and torch.isfinite(reference).all()):
        estimate = torch.nan_to_num(estimate, nan=0.0, posinf=1.0, neginf=-1.0)
        reference = torch.nan_to_num(reference, nan=0.0, posinf=1.0, neginf=-1.0)
    batch, samples = estimate.shape[0], estimate.shape[-1]
    usable = [(n, hop) for n, hop in STFT_RESOLUTIONS if samples >= n // 2 + 1] if samples >= STFT_MIN_SAMPLES else []
    if not usable:
        return l1_snr(estimate, reference)
    total = estimate.new_zeros(())
    for n_fft, hop in usable:
        window = _unit_hann(n_fft).to(device=estimate.device, dtype=estimate.dtype)

        def spectrum(x: Tensor) -> Tensor:
            return torch.stft(x.reshape(-1, samples), n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window,
                              center=True, pad_mode="reflect", normalized=False, onesided=True,
                              return_complex=True).reshape(batch, -1)

        est, ref = spectrum(estimate), spectrum(reference)
        total = total + (_d1(est.real - ref.real, ref.real) + _d1(est.imag - ref.imag, ref.imag)).mean()
    return total / len(usable)


def multi_l1_snr_db(estimate: Tensor, reference: Tensor, spec_weight: float = 0.5) -> Tensor:
    """torch-l1-snr MultiL1SNRDBLoss: (1 - w) l1_snr_db + w stft_l1_snr_db, w = spec_weight (0.5)."""
    if not 0.0 <= spec_weight <= 1.0:
        raise ValueError(f"spec_weight={spec_weight} must lie in [0, 1]")
    return (1.0 - spec_weight) * l1_snr_db(estimate, reference) + spec_weight * stft_l1_snr_db(estimate, reference)


# ----------------------------------------------------------------------------------------------
# logWMSE

def _positive_integer_rate(sample_rate: object, setting: str) -> int:
    """The rate as an int; a clear error, naming the setting, for anything but a positive whole number."""
    try:
        whole = (isinstance(sample_rate, numbers.Real) and not isinstance(sample_rate, bool)
                 and float(sample_rate) == int(sample_rate) and int(sample_rate) > 0)
    except (ValueError, OverflowError):  # nan, inf
        whole = False
    if not whole:
        raise ValueError(f"log_wmse at {setting}={sample_rate!r}: the sample rate must be a positive "
                         f"integer (Hz); the hearing filter is resampled from {LOG_WMSE_IR_RATE} Hz to it")
    return int(sample_rate)


def _sinc_hann_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[Tensor, int]:
    """torchaudio's sinc_interp_hann filter bank for rates already divided by their gcd, in float64.

    Row j (output phase j / new) holds the taps on the inputs at offsets k / orig, k in [-width,
    width + orig): with t = base (k / orig - j / new), base = rolloff min(orig, new), clamped to
    +-lowpass_filter_width, the tap is (base / orig) sinc(t) cos^2(pi t / (2 lowpass_filter_width)).
    As in torchaudio, j / new is a float32 quotient (its integer arange divided by new) and k / orig
    a float64 one; float64 phases would move the taps by up to 7e-6 (kernel of 44.1 -> 32 kHz)."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    inputs = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    outputs = (torch.arange(new, dtype=torch.float32) / new).double()
    t = ((inputs[None, :] - outputs[:, None]) * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * (window * (base / orig))).unsqueeze(1), width


def resample(x: Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = RESAMPLE_LOWPASS_WIDTH,
             rolloff: float = RESAMPLE_ROLLOFF) -> Tensor:
    """torchaudio.functional.resample's default method (sinc_interp_hann) over the last axis of x.

    The rates are divided by their gcd; each block of orig inputs gives new outputs, one per row of
    the filter bank, as a strided conv1d over the input zero-padded by width on the left and width +
    orig on the right; the output keeps ceil(new_freq * length / orig_freq) samples. The filter
    bank is built in float64 and used in x's dtype (float32 for the hearing filter, as torchaudio's
    Resample). Not the resampler of separate/resampling.py: that one is soxr's, as librosa loads."""
    if not all(isinstance(r, numbers.Integral) and not isinstance(r, bool) and r > 0 for r in (orig_freq, new_freq)):
        raise ValueError(f"resample: the rates must be positive integers, got {orig_freq!r} -> {new_freq!r}")
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq == new_freq:
        return x
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_hann_kernel(orig, new, lowpass_filter_width, rolloff)
    length = x.shape[-1]
    flat = torch.nn.functional.pad(x.reshape(-1, 1, length), (width, width + orig))
    out = torch.nn.functional.conv1d(flat, kernel.to(device=x.device, dtype=x.dtype), stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : -(-new * length // orig)]
    return out.reshape(*x.shape[:-1], out.shape[-1])


@lru_cache(maxsize=1)
def _bundled_impulse_response() -> Tensor:
    spec = importlib.util.find_spec("torch_log_wmse")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(f) / _IR_FILE for f in folders if (Path(f) / _IR_FILE).is_file()), None)
    if path is None:
        raise RuntimeError("log_wmse needs the hearing-sensitivity filter shipped in torch-log-wmse "
                           "(pip install torch-log-wmse; torchaudio is not needed)")
    data = path.read_bytes()
    if len(data) != 4 * _IR_TAPS or hashlib.sha256(data).hexdigest() != _IR_SHA256:
        raise RuntimeError(f"{path} is not torch-log-wmse's {_IR_TAPS}-tap filter (size or sha256 differs)")
    return torch.frombuffer(bytearray(data), dtype=torch.float32).clone()


@lru_cache(maxsize=8)
def _impulse_response_at(sample_rate: int) -> Tensor:
    return resample(_bundled_impulse_response(), LOG_WMSE_IR_RATE, sample_rate)


def hearing_impulse_response(sample_rate: int = LOG_WMSE_IR_RATE) -> Tensor:
    """torch-log-wmse's 4000-tap hearing-sensitivity FIR, read from the installed package without
    importing it (its __init__ imports torchaudio); at another rate, resampled from 44.1 kHz as the
    library does with torchaudio's Resample (float32, ceil(4000 sample_rate / 44100) taps)."""
    sample_rate = _positive_integer_rate(sample_rate, "sample_rate")
    return _bundled_impulse_response() if sample_rate == LOG_WMSE_IR_RATE else _impulse_response_at(sample_rate)


def _filter_power(samples: int, device: torch.device, dtype: torch.dtype,
                  sample_rate: int = LOG_WMSE_IR_RATE) -> Tensor:
    """|H|^2 of the hearing filter on an even rfft length >= samples + taps - 1 (even: the last bin
    is a real Nyquist bin, counted once), so the circular product is the linear convolution."""
    ir = hearing_impulse_response(sample_rate).to(device=device, dtype=dtype)
    length = samples + ir.shape[0] - 1
    return torch.fft.rfft(ir, n=length + length % 2).abs().square()


def weighted_energy(x: Tensor, bypass_filter: bool = False, filter_power: Tensor | None = None,
                    sample_rate: int = LOG_WMSE_IR_RATE) -> Tensor:
    """Energy over the last axis of x convolved (full, linear) with the hearing filter at sample_rate.

    Parseval: sum y^2 = (sum over the full spectrum |X H|^2) / L, counting the rfft's interior bins
    twice. `filter_power`: `_filter_power` for x's length, when the caller filters several signals of
    that length. bypass_filter: the plain energy."""
    if bypass_filter:
        return x.square().sum(dim=-1)
    if filter_power is None:
        filter_power = _filter_power(x.shape[-1], x.device, x.dtype, sample_rate)
    length = 2 * (filter_power.shape[-1] - 1)
    power = torch.fft.rfft(x, n=length).abs().square() * filter_power
    return (2.0 * power.sum(dim=-1) - power[..., 0] - power[..., -1]) / length


def log_wmse(mixture: Tensor, estimate: Tensor, reference: Tensor, sample_rate: int = LOG_WMSE_IR_RATE,
             bypass_filter: bool = False) -> Tensor:
    """torch-log-wmse LogWMSE (higher is better); the loss is its negative.

    mixture (batch, channels, samples); estimate, reference (batch, channels, stems, samples).
    Per (item, channel, stem): mse = E_w(estimate - reference) / (N * max(E_w(mixture) / N, 1e-16)),
    score -4 ln(mse + 1e-8); mean over channels and stems (p = 0), then over the batch. The
    mixture's level is a constant (no gradient). The filter is resampled to sample_rate as the
    library resamples it (see `resample`); the rate must be a positive integer even when bypassed."""
    sample_rate = _positive_integer_rate(sample_rate, "sample_rate")
    if mixture.dim() != 3 or estimate.dim() != 4 or estimate.shape != reference.shape:
        raise ValueError(f"log_wmse expects mixture (batch, channels, samples) and estimate = reference "
                         f"(batch, channels, stems, samples), got {tuple(mixture.shape)}, "
                         f"{tuple(estimate.shape)}, {tuple(reference.shape)}")
    if mixture.shape[:2] != estimate.shape[:2] or mixture.shape[-1] != estimate.shape[-1]:
        raise ValueError(f"log_wmse: mixture {tuple(mixture.shape)} does not match estimate {tuple(estimate.shape)}")
    samples = estimate.shape[-1]
    filter_power = None if bypass_filter else _filter_power(samples, estimate.device, estimate.dtype, sample_rate)
    mixture_power = weighted_energy(mixture, bypass_filter, filter_power).detach().unsqueeze(2) / samples
    floor = torch.clamp_min(mixture_power, LOG_WMSE_RMS_EPS ** 2)
    mse = weighted_energy(estimate - reference, bypass_filter, filter_power) / (samples * floor)
    return (LOG_WMSE_SCALER * torch.log(mse + LOG_WMSE_EPS)).mean(dim=(1, 2)).mean()


def check_log_wmse_available(sample_rate: int, bypass_filter: bool) -> None:
    """Fail at start-up, not at the first step, when log_wmse cannot run."""
    sample_rate = _positive_integer_rate(sample_rate, "audio.sample_rate")
    if not bypass_filter:
        hearing_impulse_response(sample_rate)


__all__ = ["l1_snr", "l1_snr_db", "stft_l1_snr_db", "multi_l1_snr_db", "dbrms", "level_matching",
           "weighted_energy", "log_wmse", "hearing_impulse_response", "resample", "check_log_wmse_available"]
