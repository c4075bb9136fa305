"""MSST dataset types 1 (random mix) and 4 (aligned), with the paper's silence training.

Every example is a pure function of (seed, epoch, index): `__getitem__` seeds its own
generator from them. That is what makes a resumed run see exactly the data an
uninterrupted run would have seen, whatever the number of workers or processes.

Item: (stems (S, C, T), mixture (C, T), counters) where S is 1 when
`training.target_instrument` is set; counters is an int64 vector of `COUNTER_NAMES`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from bsmamba2_plugin.settings import sample_rate

from .activity import ActivityCheck
from .augmentations import Augmentations
from .errors import TrainingConfigError, TrainingDataError
from .tracks import AudioFile, ScanReport, Track, scan_tracks

COUNTER_NAMES = ("windows_redrawn", "windows_forced", "stems_silenced", "read_errors")


def read_window(file: AudioFile, offset: int, length: int, channels: int) -> np.ndarray:
    """(channels, length) float32 from `offset`; mono is duplicated, a short file is zero-padded."""
    data, _ = sf.read(str(file.path), start=offset, frames=length, dtype="float32", always_2d=True)
    if data.shape[0] < min(length, file.frames - offset):
        raise TrainingDataError(f"{file.path}: read {data.shape[0]} frames at offset {offset}, expected {length}")
    if data.shape[1] == 1 and channels > 1:
        data = np.repeat(data, channels, axis=1)
    window = np.zeros((channels, length), dtype=np.float32)
    window[:, : data.shape[0]] = data.T
    return window


class MSSTrainingDataset(Dataset):
    def __init__(
        self,
        config: Any,
        data_paths: Sequence[str],
        dataset_type: int,
        examples_per_epoch: int,
        seed: int,
    ):
        if dataset_type not in (1, 4):
            raise TrainingConfigError(f"MSSTrainingDataset handles dataset types 1 and 4, not {dataset_type}")
        training, audio = config.training, config.audio
        self.instruments: list[str] = list(training.instruments)
        target = training.get("target_instrument", None)
        if target is not None and target not in self.instruments:
            raise TrainingConfigError(
                f"training.target_instrument={target!r} is not in training.instruments {self.instruments}"
            )
        self.target_index = None if target is None else self.instruments.index(target)
        self.dataset_type = dataset_type
        self.chunk_size = int(audio.chunk_size)
        self.channels = int(audio.get("num_channels", 2))
        self.min_mean_abs = float(audio.get("min_mean_abs", 0.0))
        self.silent_stem_prob = float(training.get("silent_stem_prob", 0.0))
        if not 0.0 <= self.silent_stem_prob <= 1.0:
            raise TrainingConfigError(f"training.silent_stem_prob must be within [0, 1], got {self.silent_stem_prob}")
        self.activity = ActivityCheck.from_config(training.get("activity_check", None))
        self.augmentations = Augmentations.from_config(config.get("augmentations", None), self.instruments,
                                                       sample_rate(config))
        self.tracks, self.scan_report = scan_tracks(
            data_paths, self.instruments, sample_rate(config), self.channels,
            require_all_instruments=dataset_type == 4,
        )
        self.by_instrument = {i: [t for t in self.tracks if i in t.files] for i in self.instruments}
        self.examples_per_epoch = int(examples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        self._broken: set[str] = set()

    @property
    def report(self) -> ScanReport:
        return self.scan_report

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.examples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        counters = np.zeros(len(COUNTER_NAMES), dtype=np.int64)
        if self.dataset_type == 1:
            stems = self._random_mix(rng, counters)
        else:
            stems = self._aligned(rng, counters)
        for k in range(len(stems)):
            if rng.random() < self.silent_stem_prob:  # the paper's silence training
                stems[k] = 0.0
                counters[2] += 1
        gains = self.augmentations.gains(len(stems), rng)
        if gains is not None:
            stems *= gains[:, None, None]
        mixture = self.augmentations.mixture(stems.sum(axis=0), rng)
        if self.target_index is not None:
            stems = stems[self.target_index : self.target_index + 1]
        return torch.from_numpy(np.ascontiguousarray(stems)), torch.from_numpy(mixture), torch.from_numpy(counters)

    def _usable(self, window: np.ndarray) -> bool:
        return float(np.mean(np.abs(window))) >= self.min_mean_abs and self.activity.is_active(window)

    def _offset(self, track: Track, rng: np.random.Generator) -> int:
        return int(rng.integers(0, max(track.length - self.chunk_size, 0) + 1))

    def _read(self, file: AudioFile, offset: int, counters: np.ndarray) -> np.ndarray | None:
        if str(file.path) in self._broken:
            return None
        try:
            return read_window(file, offset, self.chunk_size, self.channels)
        except Exception as error:  # noqa: BLE001 - one broken file must not end the run
            self._broken.add(str(file.path))
            counters[3] += 1
            warnings.warn(f"training data: skipping {file.path} from now on: {error}", stacklevel=2)
            return None

    def _draw_source(self, instrument: str, rng: np.random.Generator, counters: np.ndarray) -> np.ndarray:
        """An independent random window of `instrument` that passes the activity check."""
        candidates = self.by_instrument[instrument]
        last = None
        for _ in range(max(self.activity.max_attempts, 1)):
            track = candidates[int(rng.integers(len(candidates)))]
            window = self._read(track.files[instrument], self._offset(track, rng), counters)
            if window is None:
                continue
            last = window
            if self._usable(window):
                return window
            counters[0] += 1
        if last is None:
            raise TrainingDataError(f"could not read any {instrument} file (all attempts failed; see warnings)")
        counters[1] += 1  # nothing active found: train on the last window rather than stall
        return last

    def _random_mix(self, rng: np.random.Generator, counters: np.ndarray) -> np.ndarray:
        stems = []
        aug = self.augmentations
        for instrument in self.instruments:
            source = aug.stem(self._draw_source(instrument, rng, counters), instrument, rng)
            if aug.enable and aug.mixup_probs:
                layers = [source]
                for probability in aug.mixup_probs:
                    if rng.random() < probability:
                        layers.append(aug.stem(self._draw_source(instrument, rng, counters), instrument, rng))
                gains = rng.uniform(*aug.mixup_loudness, size=len(layers)).astype(np.float32)
                source = np.mean(np.stack(layers) * gains[:, None, None], axis=0)
            stems.append(source)
        return np.stack(stems).astype(np.float32)

    def _aligned(self, rng: np.random.Generator, counters: np.ndarray) -> np.ndarray:
        """All stems of one track at one offset; redrawn while any stem fails the activity check."""
        stems = None
        for _ in range(max(self.activity.max_attempts, 1)):
            track = self.tracks[int(rng.integers(len(self.tracks)))]
            offset = self._offset(track, rng)
            windows = [self._read(track.files[i], offset, counters) for i in self.instruments]
            if any(w is None for w in windows):
                continue
            stems = np.stack(windows)
            if all(self._usable(w) for w in windows):
                break
            counters[0] += 1
        else:
            if stems is None:
                raise TrainingDataError("could not read any aligned track (all attempts failed; see warnings)")
            counters[1] += 1
        return np.stack([self.augmentations.stem(s, i, rng) for s, i in zip(stems, self.instruments)])


class SeededMSSTDataset(Dataset):
    """MSST's own dataset (the `msst` package) for dataset types other than 1 and 4.

    It draws from the global `random`/`numpy` generators, so each item reseeds them from
    (seed, epoch, index) first: resumed runs then see the same data here too.
    """

    def __init__(self, config: Any, data_paths: Sequence[str], dataset_type: int, examples_per_epoch: int,
                 seed: int, metadata_path: str):
        if dataset_type not in range(1, 8):
            raise TrainingConfigError(f"--dataset_type {dataset_type}: MSST's types are 1 to 7")
        try:
            from msst.utils.dataset import MSSDataset
        except Exception as error:  # noqa: BLE001 - its imports (audiomentations, pedalboard, ...) may fail too
            raise TrainingConfigError(
                f"--dataset_type {dataset_type} uses MSST's dataset code from the msst package "
                f"(bsmamba2_plugin.train implements types 1 and 4 itself): "
                f"`pip install --no-deps msst==0.1.0 && pip install omegaconf \"bsmamba2-plugin[augment]\"` "
                f"(--no-deps: msst pins torch<2.12). Import failed: {error}"
            ) from error
        self.inner = MSSDataset(config, list(data_paths), metadata_path=metadata_path, dataset_type=dataset_type,
                                batch_size=1, verbose=True)
        self.examples_per_epoch = int(examples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        self.report = ScanReport(tracks=len(getattr(self.inner, "metadata", []) or []))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.examples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import random

        seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        item = self.inner[int(index) % len(self.inner)] if len(self.inner) else self.inner[0]
        stems, mixture = item[0], item[1]
        return stems.float(), mixture.float(), torch.zeros(len(COUNTER_NAMES), dtype=torch.int64)
