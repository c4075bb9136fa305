"""The built-in demo dataset: a sung-like voice over a generated accompaniment.

Voice: phrases of notes from a pentatonic scale, each a harmonic tone (vowel-formant
envelope, 5.5 Hz vibrato that sets in after the attack, a little breath noise), with rests
inside phrases and long silences between them: the sparse vocals the paper is about.
Accompaniment ("other"): a chord pad, a bass line, kick and hi-hat.

Generated from fixed seeds, so every machine gets the same audio (up to last-bit rounding of
NumPy's SIMD sin/exp); written once into a
cache folder (by default ~/.cache/bsmamba2_plugin/, or $BSMAMBA2_CACHE) and reused.
Layout is MSST's: train/<track>/{vocals,other}.wav and valid/<track>/{vocals,other,mixture}.wav.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2_plugin.atomic_file import atomic_path

DEMO_VERSION = 1
SAMPLE_RATE = 44100
SCALE_HZ = 220.0 * 2.0 ** (np.array([-2, 0, 3, 5, 7, 10, 12, 15]) / 12.0)  # A minor pentatonic, G3..C5
VOWEL_FORMANTS = ((700.0, 1200.0, 2600.0), (400.0, 2000.0, 2800.0), (500.0, 900.0, 2400.0), (300.0, 870.0, 2250.0))


@dataclass(frozen=True)
class DemoSpec:
    train_tracks: int = 8
    train_seconds: float = 8.0
    valid_tracks: int = 2
    valid_seconds: float = 4.0
    sample_rate: int = SAMPLE_RATE
    version: int = DEMO_VERSION


def default_cache_root() -> Path:
    return Path(os.environ.get("BSMAMBA2_CACHE", Path.home() / ".cache" / "bsmamba2_plugin"))


def envelope(length: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(length, dtype=np.float64)
    attack, release = min(attack, length // 2), min(release, length // 2)
    env[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)
    if release:
        env[length - release:] = np.linspace(1.0, 0.0, release)
    return env


def sung_note(f0: float, seconds: float, vowel: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    vibrato_depth = 0.35 * np.clip((t - 0.15) / 0.2, 0.0, 1.0)  # semitones, after the attack
    freq = f0 * 2.0 ** (vibrato_depth * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi)) / 12.0)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    formants = VOWEL_FORMANTS[vowel]
    tone = np.zeros(n)
    for k in range(1, int(10000 / f0) + 1):
        harmonic_hz = k * f0
        gain = sum(np.exp(-0.5 * ((harmonic_hz - f) / (0.12 * f)) ** 2) for f in formants) + 0.05
        tone += gain / k**0.7 * np.sin(k * phase)
    breath = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.02
    note = (tone / max(np.max(np.abs(tone)), 1e-9) + breath) * envelope(n, int(0.03 * sr), int(0.06 * sr))
    return note


def voice_track(seconds: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    total = int(seconds * sr)
    out = np.zeros(total)
    position = int(rng.uniform(0.0, 1.0) * sr)  # may start with silence
    while position < total:
        for _ in range(int(rng.integers(2, 6))):  # one phrase
            length = rng.uniform(0.25, 0.7)
            note = sung_note(float(rng.choice(SCALE_HZ)), length, int(rng.integers(len(VOWEL_FORMANTS))), rng, sr)
            end = min(position + len(note), total)
            out[position:end] += note[: end - position] * rng.uniform(0.5, 0.9)
            position = end + int(rng.uniform(0.0, 0.15) * sr)  # short rests inside a phrase
            if position >= total:
                break
        position += int(rng.uniform(1.0, 2.5) * sr)  # silence between phrases
    pan = rng.uniform(-0.15, 0.15)
    return np.stack([out * (1 - pan), out * (1 + pan)]) * 0.35


def accompaniment_track(seconds: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    total = int(seconds * sr)
    beat = int(sr * 60.0 / rng.uniform(95, 130))
    t = np.arange(total) / sr
    root = float(rng.choice(SCALE_HZ[:4])) / 2
    pad = np.zeros(total)
    for interval in (0, 3, 7):  # a minor triad with slow tremolo
        f = root * 2.0 ** (interval / 12.0)
        pad += sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3)) / k for k in range(1, 9))
    pad *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t) ** 2
    bass = np.zeros(total)
    kick = np.zeros(total)
    hat = np.zeros(total)
    kick_len, hat_len = int(0.25 * sr), int(0.05 * sr)
    tk = np.arange(kick_len) / sr
    kick_shape = np.sin(2 * np.pi * (50 * tk + 70 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 12)
    for start in range(0, total, beat):
        end = min(start + beat, total)
        f = root / 2 * 2.0 ** (int(rng.choice([0, 3, 5, 7])) / 12.0)
        tb = np.arange(end - start) / sr
        bass[start:end] = (np.sin(2 * np.pi * f * tb) + 0.3 * np.sin(4 * np.pi * f * tb)) * np.exp(-tb * 3)
        stop = min(start + kick_len, total)
        kick[start:stop] += kick_shape[: stop - start]
        for half in (start, start + beat // 2):
            if half < total:
                stop = min(half + hat_len, total)
                noise = np.diff(rng.standard_normal(stop - half + 1))
                hat[half:stop] += noise * np.exp(-np.arange(stop - half) / sr * 80) * 0.15
    left = 0.05 * pad * 0.8 + 0.25 * bass + 0.4 * kick + 0.6 * hat
    right = 0.05 * pad * 1.2 + 0.25 * bass + 0.4 * kick + 0.4 * hat
    return np.stack([left, right]) * 0.6


def write_split(folder: Path, split: str, count: int, seconds: float, sr: int, with_mixture: bool) -> None:
    for index in range(count):
        rng = np.random.default_rng([DEMO_VERSION, 0 if split == "train" else 1, index])
        track = folder / split / f"{split}_{index:02d}"
        track.mkdir(parents=True)
        vocals = voice_track(seconds, rng, sr)
        other = accompaniment_track(seconds, rng, sr)
        sf.write(track / "vocals.wav", vocals.T, sr, subtype="FLOAT")
        sf.write(track / "other.wav", other.T, sr, subtype="FLOAT")
        if with_mixture:
            sf.write(track / "mixture.wav", (vocals + other).T, sr, subtype="FLOAT")


def ensure_demo_dataset(root: str | os.PathLike[str] | None = None, spec: DemoSpec = DemoSpec()) -> Path:
    """The demo dataset's folder (with train/ and valid/), generated on first use.

    Built in a temporary sibling folder and renamed into place, so an interrupted run never
    leaves a half-written dataset that a later run would trust.
    """
    root = Path(root) if root is not None else default_cache_root()
    folder = root / f"demo_vocals_v{spec.version}"
    marker = folder / "dataset.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == asdict(spec):
                return folder
        except (OSError, ValueError):
            pass
        shutil.rmtree(folder)  # from another spec or damaged: rebuild
    try:
        with atomic_path(folder) as staging:  # a hidden sibling folder, fsynced and renamed into place
            staging.mkdir()
            write_split(staging, "train", spec.train_tracks, spec.train_seconds, spec.sample_rate, with_mixture=False)
            write_split(staging, "valid", spec.valid_tracks, spec.valid_seconds, spec.sample_rate, with_mixture=True)
            (staging / "dataset.json").write_text(json.dumps(asdict(spec)))
    except OSError:  # another process finished first: its complete folder is in place
        if not marker.is_file():
            raise
    return folder
