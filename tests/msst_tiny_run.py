"""Shared by the MSST end-to-end tests: a tiny bsmamba2 config and a generated type-1 dataset.

Type 1 (MSST docs/dataset_types.md): every subfolder of a data path is a track holding one
`<instrument>.wav` per stem; validation tracks also hold `mixture.wav` (the sum of the stems).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
INSTRUMENTS = ("vocals", "other")
TESTS_DIR = Path(__file__).resolve().parent
TORCHAUDIO_STAND_IN = TESTS_DIR / "torchaudio_stand_in"

# 2 stems, dim 16, one layer: ~30k parameters, a few seconds per step on one CPU core.
TINY_CONFIG = """\
audio:
  chunk_size: 8192
  min_mean_abs: 0.0
  hop_length: 64

training:
  model_type: bsmamba2
  batch_size: 2
  gradient_accumulation_steps: 1
  grad_clip: 0
  segment: 0.19
  shift: 1
  samplerate: 44100
  channels: 2
  normalize: false
  instruments: ['vocals', 'other']
  target_instrument: null
  num_epochs: {num_epochs}
  num_steps: {num_steps}
  optimizer: adam
  lr: 1.0e-3
  patience: 2
  reduce_factor: 0.95
  q: 0.95
  coarse_loss_clip: false
  ema_momentum: 0.999
  read_metadata_procs: 1
  use_amp: false

model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 2
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
  freqs_per_bands: !!python/tuple [32, 32, 65]
  mask_estimator_depth: 1
  multi_stft_resolutions_window_sizes: !!python/tuple [256, 128]
  multi_stft_hop_size: 64

augmentations:
  enable: false

inference:
  batch_size: 1
  num_overlap: 2
"""


def write_tiny_config(path: Path, num_steps: int = 3, num_epochs: int = 1) -> Path:
    path.write_text(TINY_CONFIG.format(num_steps=num_steps, num_epochs=num_epochs), encoding="utf-8")
    return path


def _stem(rng: np.random.Generator, instrument: str, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if instrument == "vocals":  # a gliding tone with vibrato: narrow-band, like a voice
        f0 = rng.uniform(180, 400)
        signal = 0.3 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 5 * t))
    else:  # broadband noise with a slow envelope: like an accompaniment
        signal = 0.1 * rng.standard_normal(t.size) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    stereo = np.stack([signal, signal * rng.uniform(0.7, 1.0)], axis=1)
    return stereo.astype(np.float32)


def write_type1_dataset(root: Path, tracks: int, seconds: float, with_mixture: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for index in range(tracks):
        folder = root / f"track_{index}"
        folder.mkdir(parents=True)
        stems = {name: _stem(rng, name, seconds) for name in INSTRUMENTS}
        for name, audio in stems.items():
            sf.write(folder / f"{name}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
        if with_mixture:
            sf.write(folder / "mixture.wav", sum(stems.values()), SAMPLE_RATE, subtype="FLOAT")
    return root


def subprocess_env(stand_in_torchaudio: bool) -> dict[str, str]:
    """Environment for MSST subprocesses: one thread, no wandb network, optional torchaudio stand-in."""
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg")
    env.pop("MSST_COMPAT_DISABLE", None)
    env.pop("MSST_DISABLE_PLUGINS", None)
    if stand_in_torchaudio:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TORCHAUDIO_STAND_IN), env.get("PYTHONPATH")]))
    return env


def console_script(name: str) -> str:
    """Path of a console script installed beside this interpreter (msst-train etc.)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
