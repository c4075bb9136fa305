"""Separation quality metrics: uSDR (MSST/MDX), cSDR (museval BSS Eval v4) and silent-region leakage.

All functions take numpy arrays shaped (channels, samples); a 1-D array is read as one channel.

Why cSDR has a closed form here: in BSS Eval images mode (museval's v4, ``bsseval_sources_version=False``)
the frame SDR is ``||s_true||^2 / ||e_spat + e_interf + e_artif||^2`` and the three error terms add up
to ``estimate - reference`` by construction, so the 512-tap distortion filters cancel out of the SDR.
Computing it directly gives museval's numbers (the tests compare against museval itself) without
solving the filter systems, which take most of museval's time.
"""
from __future__ import annotations

import math

import numpy as np
from beartype import beartype

USDR_EPS = 1e-8  # MSST utils/metrics.py sdr()
LEAKAGE_FLOOR_DB = -120.0


def _as_pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference)
    estimate = np.asarray(estimate)
    if reference.ndim == 1:
        reference = reference[None, :]
    if estimate.ndim == 1:
        estimate = estimate[None, :]
    if reference.ndim != 2 or estimate.ndim != 2:
        raise ValueError(
            f"metrics expect arrays shaped (channels, samples); got reference {reference.shape}, "
            f"estimate {estimate.shape}"
        )
    if reference.shape != estimate.shape:
        raise ValueError(
            f"reference and estimate must have the same shape (channels, samples); got reference "
            f"{reference.shape} and estimate {estimate.shape}"
        )
    if reference.shape[1] == 0:
        raise ValueError("metrics need at least one sample; got an empty signal")
    if not (np.isfinite(reference).all() and np.isfinite(estimate).all()):
        raise ValueError("reference and estimate must be finite (found NaN or inf)")
    return reference.astype(np.float64, copy=False), estimate.astype(np.float64, copy=False)


@beartype
def usdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Utterance-level SDR in dB over the whole signal, all channels at once (MSST's ``sdr``)."""
    reference, estimate = _as_pair(reference, estimate)
    num = float(np.sum(np.square(reference))) + USDR_EPS
    den = float(np.sum(np.square(reference - estimate))) + USDR_EPS
    return 10.0 * math.log10(num / den)


def _frame_slices(length: int, window: int, hop: int) -> list[slice]:
    # museval's Framing: a trailing partial frame is dropped; a signal no longer than one window
    # is a single frame.
    if window < length:
        count = (length - window + hop) // hop
    else:
        count = 1
    return [slice(k * hop, min(k * hop + window, length)) for k in range(count)]


def _museval_silent(frame: np.ndarray) -> bool:
    # museval's _any_source_silent: every sample's sum over channels is exactly zero.
    return bool(np.all(np.sum(frame, axis=0) == 0))


@beartype
def csdr_frames(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, window_seconds: float = 1.0,
    hop_seconds: float | None = None,
) -> np.ndarray:
    """Per-frame SDR in dB as museval's BSS Eval v4 computes it for one source (NaN = skipped frame).

    Frames where the reference or the estimate is digital silence are NaN, as in museval; a frame
    with a perfect estimate is +inf.
    """
    reference, estimate = _as_pair(reference, estimate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window = int(window_seconds * sample_rate)
    hop = int((window_seconds if hop_seconds is None else hop_seconds) * sample_rate)
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be at least one sample; got {window} and {hop}")
    values = []
    for frame in _frame_slices(reference.shape[1], window, hop):
        ref = reference[:, frame]
        est = estimate[:, frame]
        if _museval_silent(ref) or _museval_silent(est):
            values.append(math.nan)
            continue
        err = float(np.sum(np.square(est - ref)))
        if err == 0.0:
            values.append(math.inf)
            continue
        values.append(10.0 * math.log10(float(np.sum(np.square(ref))) / err))
    return np.asarray(values, dtype=np.float64)


@beartype
def csdr(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Chunk-level SDR: median over 1 s frames (1 s hop) of museval BSS Eval v4 SDR, NaN frames skipped.

    Returns NaN when every frame is skipped (reference or estimate silent throughout).
    """
    frames = csdr_frames(reference, estimate, sample_rate)
    if np.all(np.isnan(frames)):
        return math.nan
    return float(np.nanmedian(frames))


@beartype
def silent_leakage(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    frame_seconds: float = 1.0,
    silence_threshold_db: float = -60.0,
) -> float:
    """Level of the estimate, in dBFS, inside the regions where the reference is silent.

    Definition: the signal is cut into non-overlapping frames of ``frame_seconds`` (the trailing
    partial frame is kept). A frame is *silent* when the reference's RMS over its channels and
    samples is below ``silence_threshold_db`` dBFS (full scale = amplitude 1.0); digital silence
    always is. The result is ``10 log10(mean(estimate^2))`` over all samples and channels of the
    silent frames, i.e. the RMS level of what leaked into the silent regions, in dB relative to
    full scale. Lower is better; it is floored at -120 dBFS so a perfectly silent estimate gives
    -120, not -inf. Returns NaN when the reference has no silent frame (nothing to measure).

    This is what cSDR cannot see: museval marks frames with a silent reference NaN and skips them.
    """
    reference, estimate = _as_pair(reference, estimate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    frame = int(frame_seconds * sample_rate)
    if frame < 1:
        raise ValueError(f"frame_seconds * sample_rate must be at least one sample, got {frame}")
    threshold_energy = 10.0 ** (silence_threshold_db / 10.0)
    leaked_energy = 0.0
    silent_values = 0
    for start in range(0, reference.shape[1], frame):
        ref = reference[:, start:start + frame]
        if float(np.mean(np.square(ref))) < threshold_energy or not np.any(ref):
            est = estimate[:, start:start + frame]
            leaked_energy += float(np.sum(np.square(est)))
            silent_values += est.size
    if silent_values == 0:
        return math.nan
    mean_energy = leaked_energy / silent_values
    if mean_energy <= 0.0:
        return LEAKAGE_FLOOR_DB
    return max(LEAKAGE_FLOOR_DB, 10.0 * math.log10(mean_energy))


@beartype
def silent_fraction(
    reference: np.ndarray, sample_rate: int, frame_seconds: float = 1.0, silence_threshold_db: float = -60.0
) -> float:
    """Fraction of the reference's samples that lie in silent frames (same rule as ``silent_leakage``)."""
    reference, _ = _as_pair(reference, reference)
    frame = int(frame_seconds * sample_rate)
    if frame < 1:
        raise ValueError(f"frame_seconds * sample_rate must be at least one sample, got {frame}")
    threshold_energy = 10.0 ** (silence_threshold_db / 10.0)
    silent = 0
    for start in range(0, reference.shape[1], frame):
        ref = reference[:, start:start + frame]
        if float(np.mean(np.square(ref))) < threshold_energy or not np.any(ref):
            silent += ref.shape[1]
    return silent / reference.shape[1]


# ----------------------------------------------------------------------------------------------
# MSST's validation metrics (`--metrics`), each computed as MSST's utils/metrics.py computes it.
# All take (channels, samples) arrays; all are "higher is better" except leakage.

K_SDR_K = 10.0


def k_sdr(sdr_db: float, k: float = K_SDR_K) -> float:
    """MSST's bounded SDR: SDR clipped to (-k, k], then 100 * log1p(sdr + k) / log1p(2k)."""
    clipped = max(min(sdr_db, k), -k + 1e-6)
    return 100.0 * math.log1p(clipped + k) / math.log1p(2 * k)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSST's si_sdr, eps terms and all: one scale per sample position summed over channels."""
    reference, estimate = _as_pair(reference, estimate)
    eps = 1e-8
    # MSST sums over axes (0, 1) of a (channels, samples) array: one scale for the whole signal
    scale = np.sum(estimate * reference + eps) / np.sum(reference**2 + eps)
    scaled = reference * scale
    return float(10 * np.log10(np.sum(scaled**2) / (np.sum((scaled - estimate) ** 2) + eps) + eps))


def _torch_pair(reference: np.ndarray, estimate: np.ndarray):
    import torch

    reference, estimate = _as_pair(reference, estimate)
    return torch.from_numpy(reference.astype(np.float32)), torch.from_numpy(estimate.astype(np.float32))


def l1_freq(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSST's L1Freq_metric: 100 / (1 + 10 * mean |(|STFT(est)| - |STFT(ref)|)|), n_fft 2048, hop 1024,
    torch.stft's default rectangular window."""
    import torch

    ref, est = _torch_pair(reference, estimate)
    window = torch.ones(2048)  # torch.stft's default, written out (no warning)
    ref_mag = torch.stft(ref, 2048, 1024, window=window, return_complex=True).abs()
    est_mag = torch.stft(est, 2048, 1024, window=window, return_complex=True).abs()
    return 100.0 / (1.0 + float(10 * (est_mag - ref_mag).abs().mean()))


def aura_stft(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSST's AuraSTFT_metric: 100 / (1 + 10 * auraloss STFTLoss(log-mag 1, lin-mag 0, sc 1))."""
    from auraloss.freq import STFTLoss

    ref, est = _torch_pair(reference, estimate)
    loss = STFTLoss(w_log_mag=1.0, w_lin_mag=0.0, w_sc=1.0)(ref[None], est[None])
    return float(100 / (1.0 + 10 * loss))


def aura_mrstft(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 44100) -> float:
    """MSST's AuraMRSTFT_metric: mel-scaled (128 bins), perceptually weighted multi-resolution STFT loss
    over (1024, 2048, 4096) windows with hops (256, 512, 1024); 100 / (1 + 10 * loss).
    MSST fixes the rate at 44100; here it is the audio's rate."""
    from auraloss.freq import MultiResolutionSTFTLoss

    ref, est = _torch_pair(reference, estimate)
    loss = MultiResolutionSTFTLoss(fft_sizes=[1024, 2048, 4096], hop_sizes=[256, 512, 1024],
                                   win_lengths=[1024, 2048, 4096], scale="mel", n_bins=128,
                                   sample_rate=sample_rate, perceptual_weighting=True)(ref[None], est[None])
    return float(100 / (1.0 + 10 * loss))


def _amplitude_to_db(x, top_db: float = 80.0):
    """torchaudio's AmplitudeToDB(stype="magnitude", top_db=80) on one (channels, mels, frames) tensor:
    20 log10(max(x, 1e-10)), floored at (max over the whole tensor) - top_db."""
    import torch

    db = 20.0 * torch.log10(torch.clamp(x, min=1e-10))
    return torch.maximum(db, db.amax() - top_db)


def bleedless_fullness(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 44100,
                       n_fft: int = 4096, hop_length: int = 1024, n_mels: int = 512) -> tuple[float, float]:
    """MSST's bleed_full: mel (librosa, 512 bands) magnitude spectrograms in dB (top 80 dB); with
    d = est_dB - ref_dB, bleedless = 100 / (1 + mean of d > 0), fullness = 100 / (1 + mean of -d over d < 0)."""
    import librosa
    import torch

    ref, est = _torch_pair(reference, estimate)
    window = torch.hann_window(n_fft)
    mel = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels))

    def spectrum(x):
        stft = torch.stft(x, n_fft=n_fft, hop_length=hop_length, window=window, return_complex=True,
                          pad_mode="constant")
        return _amplitude_to_db(torch.matmul(mel, stft.abs()))

    diff = spectrum(est) - spectrum(ref)
    positive, negative = diff[diff > 0], diff[diff < 0]
    mean_positive = float(positive.mean()) if positive.numel() else 0.0
    mean_negative = float(negative.mean()) if negative.numel() else 0.0
    return 100.0 / (mean_positive + 1.0), 100.0 / (-mean_negative + 1.0)


def log_wmse(reference: np.ndarray, estimate: np.ndarray, mixture: np.ndarray, sample_rate: int = 44100) -> float:
    """MSST's LogWMSE_metric: torch-log-wmse's LogWMSE (bsmamba2_plugin.snr_losses), higher is better.

    MSST's own call uses the pre-1.0 arguments (audio_length, return_as_loss), which torch-log-wmse 1.x
    refuses; the quantity is the same: the log of the frequency-weighted MSE of (estimate - reference),
    scaled by the mixture's power, per channel."""
    import torch

    from bsmamba2_plugin import snr_losses

    ref, est = _torch_pair(reference, estimate)
    mix = torch.from_numpy(np.asarray(mixture, dtype=np.float32).reshape(ref.shape))
    # [batch, channel, time] and [batch, channel, stem, time]
    return float(snr_losses.log_wmse(mix[None], est[None, :, None], ref[None, :, None], sample_rate))


def l1_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSST's MultiL1SNRDB_metric: minus torch-l1-snr's MultiL1SNRDBLoss with MSST's arguments (weight 1,
    spec_weight 0.5, l1_weight 0, time regularisation on, spectral off: the defaults), higher is better."""
    import torch

    from bsmamba2_plugin import snr_losses

    ref, est = _torch_pair(reference, estimate)
    with torch.no_grad():
        return -float(snr_losses.multi_l1_snr_db(est[None], ref[None]))


# name -> higher is better. "sdr" is MSST's sdr (our usdr); csdr and leakage are ours.
METRIC_DIRECTIONS: dict[str, bool] = {
    "sdr": True, "k_sdr": True, "si_sdr": True, "l1_freq": True, "log_wmse": True, "aura_stft": True,
    "aura_mrstft": True, "bleedless": True, "fullness": True, "l1_snr": True, "csdr": True, "leakage": False,
}
MSST_METRICS = ("sdr", "k_sdr", "si_sdr", "l1_freq", "log_wmse", "aura_stft", "aura_mrstft", "bleedless",
                "fullness", "l1_snr")
METRIC_NAMES = MSST_METRICS + ("csdr", "leakage")


def check_metric_names(names: list[str] | tuple[str, ...], origin: str = "--metrics") -> None:
    unknown = [n for n in names if n not in METRIC_DIRECTIONS]
    if unknown:
        raise ValueError(f"{origin}: unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")


def stem_metrics(names: list[str] | tuple[str, ...], reference: np.ndarray, estimate: np.ndarray,
                 mixture: np.ndarray | None, sample_rate: int,
                 silence_threshold_db: float = -60.0) -> dict[str, float]:
    """The named metrics of one stem (arrays (channels, samples), cut to the shorter), by name."""
    check_metric_names(names)
    length = min(reference.shape[-1], estimate.shape[-1])
    reference, estimate = reference[..., :length], estimate[..., :length]
    out: dict[str, float] = {}
    sdr_db = None
    for name in names:
        if name in ("sdr", "k_sdr"):
            sdr_db = usdr(reference, estimate) if sdr_db is None else sdr_db
            out[name] = sdr_db if name == "sdr" else k_sdr(sdr_db)
        elif name == "si_sdr":
            out[name] = si_sdr(reference, estimate)
        elif name == "l1_freq":
            out[name] = l1_freq(reference, estimate)
        elif name == "aura_stft":
            out[name] = aura_stft(reference, estimate)
        elif name == "aura_mrstft":
            out[name] = aura_mrstft(reference, estimate, sample_rate)
        elif name in ("bleedless", "fullness"):
            if name not in out:
                out["bleedless"], out["fullness"] = bleedless_fullness(reference, estimate, sample_rate)
        elif name == "log_wmse":
            if mixture is None:
                raise ValueError("metric log_wmse needs the mixture")
            out[name] = log_wmse(reference, estimate, mixture[..., :length], sample_rate)
        elif name == "l1_snr":
            out[name] = l1_snr(reference, estimate)
        elif name == "csdr":
            out[name] = csdr(reference, estimate, sample_rate)
        elif name == "leakage":
            out[name] = silent_leakage(reference, estimate, sample_rate, silence_threshold_db=silence_threshold_db)
    return {name: out[name] for name in names}


def stems_metrics(names: list[str] | tuple[str, ...], references: dict[str, np.ndarray],
                  estimates: dict[str, np.ndarray], mixture: np.ndarray | None, sample_rate: int,
                  silence_threshold_db: float = -60.0) -> dict[str, dict[str, float]]:
    """stem -> metric name -> value, for every stem of `estimates` (each needs its reference)."""
    missing = sorted(set(estimates) - set(references))
    if missing:
        raise ValueError(f"no reference for estimated stem(s) {missing}")
    return {stem: stem_metrics(names, references[stem], estimate, mixture, sample_rate, silence_threshold_db)
            for stem, estimate in estimates.items()}
