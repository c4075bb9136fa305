"""In-memory separation of one mixture array, the same result as MSST's ``demix``."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bsmamba2_plugin.separate.chunk_plan import InferenceSettings
from bsmamba2_plugin.separate.overlap_add import separate_blocks


class ArraySource:
    """A (channels, samples) array seen as a block source."""

    def __init__(self, mixture: np.ndarray):
        self.data = mixture
        self.channels, self.frames = mixture.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[:, start:stop]


class CollectingSink:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block: np.ndarray) -> None:
        self.blocks.append(block)

    def joined(self) -> np.ndarray:
        return np.concatenate(self.blocks, axis=-1)


def as_mixture_array(mixture: Any) -> np.ndarray:
    """(channels, samples) float32 from a numpy array or tensor; 1-D means mono."""
    if isinstance(mixture, torch.Tensor):
        mixture = mixture.detach().cpu().numpy()
    array = np.asarray(mixture, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"mixture must be shaped (channels, samples) or (samples,); got {array.shape}")
    if array.shape[1] == 0:
        raise ValueError("mixture has no samples")
    if not np.isfinite(array).all():
        raise ValueError("mixture contains NaN or infinite samples")
    return array


def demix(
    model: torch.nn.Module, mixture: Any, config: Any, device: torch.device | str = "cpu"
) -> dict[str, np.ndarray]:
    """Separate ``mixture`` (channels, samples) into {instrument: (channels, samples) float32}.

    Same chunking, windowing, batching and border handling as MSST's ``demix`` (generic branch),
    reading ``inference.num_overlap``, ``inference.batch_size``, ``audio.chunk_size`` (or
    ``inference.chunk_size``), ``training.instruments``/``training.target_instrument`` and
    ``training.use_amp`` from ``config``. The model must already be on ``device``.
    """
    settings = InferenceSettings.from_config(config)
    array = as_mixture_array(mixture)
    sink = CollectingSink()
    separate_blocks(model, ArraySource(array), sink, settings, device)
    stems = sink.joined()
    return {name: stems[k] for k, name in enumerate(settings.instruments)}
