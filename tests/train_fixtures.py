"""Shared helpers for the trainer tests: a tiny config and tiny MSST-layout datasets (real WAV files)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

RATE = 44100


def tiny_config(path: Path, **training) -> Path:
    config = {
        "audio": {"chunk_size": 4096, "num_channels": 2, "sample_rate": RATE, "min_mean_abs": 0.0},
        "model": {"dim": 16, "depth": 1, "stft_n_fft": 256, "stft_hop_length": 64, "stft_win_length": 256,
                  "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1,
                  "multi_stft_resolutions_window_sizes": [512, 256], "multi_stft_hop_size": 128},
        "training": {"model_type": "bsmamba2", "instruments": ["vocals", "other"], "target_instrument": "vocals",
                     "batch_size": 2, "gradient_accumulation_steps": 1, "grad_clip": 3, "optimizer": "adamw",
                     "lr": 1e-3, "num_steps": 4, "num_epochs": 2, "patience": 1000, "reduce_factor": 0.95,
                     "ema_momentum": 0.9, "use_amp": True, "silent_stem_prob": 0.1,
                     "activity_check": {"enable": True}, **training},
        "augmentations": {"enable": True, "loudness": True, "loudness_min": 0.5, "loudness_max": 1.5,
                          "all": {"channel_shuffle": 0.5, "random_polarity": 0.5}},
        "inference": {"chunk_size": 4096, "batch_size": 2, "num_overlap": 2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def with_keys(path: Path, **sections) -> Path:
    """Add or update keys of sections of a YAML config in place."""
    config = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


def tone(seconds: float, freq: float, seed: int, gap: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    if gap:
        x[: int(0.45 * t.size)] = 0.0  # a silent stretch: the leakage metric has something to measure
    return np.stack([x, 0.9 * x], axis=1).astype(np.float32)


def make_tracks(root: Path, count: int = 3, seconds: float = 0.5, with_mixture: bool = False) -> Path:
    for k in range(count):
        folder = root / f"track_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        vocals = tone(seconds, 330 + 40 * k, seed=k, gap=with_mixture)
        other = tone(seconds, 110 + 20 * k, seed=100 + k)
        sf.write(folder / "vocals.wav", vocals, RATE, subtype="FLOAT")
        sf.write(folder / "other.wav", other, RATE, subtype="FLOAT")
        if with_mixture:
            sf.write(folder / "mixture.wav", vocals + other, RATE, subtype="FLOAT")
    return root


def run_train(args: list[str], timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bsmamba2_plugin.train", *args, "--no_progress"],
                          capture_output=True, text=True, timeout=timeout, env=env, **popen)


def start_train(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bsmamba2_plugin.train", *args, "--no_progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
