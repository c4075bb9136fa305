"""Spectrogram pictures of audio, as MSST's ``--draw_spectro`` draws them (and the web app shows)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bsmamba2_plugin.atomic_file import atomic_path

N_FFT, HOP = 2048, 512  # librosa.stft's defaults, which MSST's draw_spectrogram uses
TOP_DB = 80.0


def spectrogram_db(audio: np.ndarray) -> np.ndarray:
    """(channels, n) -> (freqs, frames) dB of the mono mix's magnitude, 0 dB at its maximum, floor
    -80 dB (librosa's amplitude_to_db with ref=np.max)."""
    mono = torch.from_numpy(np.ascontiguousarray(np.atleast_2d(audio).mean(axis=0), dtype=np.float32))
    if mono.shape[0] < 2:
        mono = torch.nn.functional.pad(mono, (0, 2 - mono.shape[0]))
    spec = torch.stft(mono, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="constant",
                      return_complex=True).abs().numpy()
    power = np.maximum(spec.astype(np.float64) ** 2, 1e-10)
    db = 10 * np.log10(power) - 10 * np.log10(max(power.max(), 1e-10))
    return np.maximum(db, db.max() - TOP_DB)


def draw_spectrogram(audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write a JPEG (or PNG, by ``path``'s suffix) of ``audio``'s spectrogram, atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    db = spectrogram_db(audio)
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.subplots()
    duration = max(audio.shape[-1], 1) / sample_rate
    image = axes.imshow(db, origin="lower", aspect="auto", cmap="plasma",
                        extent=(0.0, duration, 0.0, sample_rate / 2))
    axes.set(title=title, xlabel="Time (s)", ylabel="Hz")
    figure.colorbar(image, ax=axes, format="%+2.f dB")
    file_format = "png" if path.suffix.lower() == ".png" else "jpg"
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=file_format)
    return path
