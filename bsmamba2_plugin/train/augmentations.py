"""MSST's `augmentations` section, the subset that needs no extra library.

Supported keys, with MSST's meaning: `enable`, `loudness` (`loudness_min`, `loudness_max`),
`mixup` (`mixup_probs`, `mixup_loudness_min`, `mixup_loudness_max`), and in `all` or a
per-instrument section: `channel_shuffle`, `random_inverse`, `random_polarity`. Keys that
need audiomentations or pedalboard (pitch shift, EQ, MP3, ...) are reported once and ignored.
All randomness comes from the generator passed in, so a training example is a function of
(seed, epoch, index) and a resumed run sees the same data.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PER_STEM_KEYS = ("channel_shuffle", "random_inverse", "random_polarity")


@dataclass(frozen=True)
class Augmentations:
    enable: bool = False
    loudness: tuple[float, float] | None = None
    mixup_probs: tuple[float, ...] = ()
    mixup_loudness: tuple[float, float] = (0.5, 1.5)
    per_stem: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # instrument -> key -> probability

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, instruments: list[str]) -> Augmentations:
        if not section or not section.get("enable", False):
            return cls()
        section = dict(section)
        loudness = None
        if section.get("loudness", False):
            loudness = (float(section.get("loudness_min", 0.5)), float(section.get("loudness_max", 1.5)))
        mixup_probs: tuple[float, ...] = ()
        if section.get("mixup", False):
            mixup_probs = tuple(float(p) for p in section.get("mixup_probs", ()))
        mixup_loudness = (float(section.get("mixup_loudness_min", 0.5)), float(section.get("mixup_loudness_max", 1.5)))
        common = dict(section.get("all", {}) or {})
        per_stem: dict[str, dict[str, float]] = {}
        ignored: set[str] = set()
        for instrument in instruments:
            merged = {**common, **dict(section.get(instrument, {}) or {})}
            per_stem[instrument] = {k: float(v) for k, v in merged.items() if k in PER_STEM_KEYS}
            ignored |= {k for k, v in merged.items()
                        if k not in PER_STEM_KEYS and not k.endswith(("_min", "_max")) and _enabled(v)}
        if ignored:
            warnings.warn(
                f"augmentations {sorted(ignored)} need MSST's audiomentations/pedalboard path and are ignored by "
                f"bsmamba2_plugin.train (supported: loudness, mixup, {', '.join(PER_STEM_KEYS)})",
                stacklevel=2,
            )
        return cls(True, loudness, mixup_probs, mixup_loudness, per_stem)

    def stem(self, source: np.ndarray, instrument: str, rng: np.random.Generator) -> np.ndarray:
        """MSST's per-source augmentations on (channels, samples)."""
        if not self.enable:
            return source
        probabilities = self.per_stem.get(instrument, {})
        if rng.random() < probabilities.get("channel_shuffle", 0.0):
            source = source[::-1]
        if rng.random() < probabilities.get("random_inverse", 0.0):
            source = source[:, ::-1]
        if rng.random() < probabilities.get("random_polarity", 0.0):
            source = -source
        return np.ascontiguousarray(source)

    def gains(self, count: int, rng: np.random.Generator) -> np.ndarray | None:
        if not self.enable or self.loudness is None:
            return None
        return rng.uniform(self.loudness[0], self.loudness[1], size=count).astype(np.float32)


def _enabled(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return bool(value)
