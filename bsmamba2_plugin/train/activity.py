"""The paper's source activity check: is a window busy enough to train on?

BSMamba2's official code (src/data/preprocessing.py, `SAD`) keeps a window when, in every
channel, more than half of its sub-chunks have an RMS above max(gamma, the 15 % quantile of
the sub-chunk RMS values). Windows that are mostly silence are redrawn, so training sees
real singing; silence is then brought back on purpose, in a controlled dose, by zeroing
whole stems (`silent_stem_prob`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TrainingConfigError


@dataclass(frozen=True)
class ActivityCheck:
    enable: bool = True
    sub_chunks: int = 10
    rms_floor: float = 1e-3
    quantile: float = 0.15
    min_active_fraction: float = 0.5
    max_attempts: int = 20

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> ActivityCheck:
        if section is None:
            return cls(enable=False)
        values = dict(section)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise TrainingConfigError(
                f"training.activity_check has unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        check = cls(**values)
        if check.sub_chunks < 1 or check.max_attempts < 1 or not 0.0 <= check.quantile <= 1.0:
            raise TrainingConfigError(
                f"training.activity_check needs sub_chunks >= 1, max_attempts >= 1 and 0 <= quantile <= 1; got {values}"
            )
        return check

    def is_active(self, window: np.ndarray) -> bool:
        """window: (channels, samples)."""
        if not self.enable:
            return True
        part = window.shape[-1] // self.sub_chunks
        if part == 0:
            return bool(np.any(window))
        parts = window[:, : part * self.sub_chunks].reshape(window.shape[0], self.sub_chunks, part)
        rms = np.sqrt(np.mean(np.square(parts, dtype=np.float64), axis=-1))  # (channels, sub_chunks)
        threshold = np.maximum(self.rms_floor, np.quantile(rms, self.quantile, axis=-1, keepdims=True))
        return bool(np.all(np.mean(rms > threshold, axis=-1) > self.min_active_fraction))
