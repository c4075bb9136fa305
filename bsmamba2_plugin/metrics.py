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
