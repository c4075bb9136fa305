"""MSST's chunking schedule for one signal, computed from its length alone.

MSST's ``demix`` (generic branch) reflect-pads the mixture by ``border = chunk - step`` on both
sides when it is long enough, cuts chunks every ``step`` samples, runs them ``batch_size`` at a time
and overlap-adds them with a linear-fade window. Two details of its window are quirks that an
identical result must reproduce: the window is chosen once per *batch*, so only a batch that holds
nothing but the first chunk drops its fade-in, and every chunk of the batch that holds the last
chunk drops its fade-out. Knowing the length up front is enough to reproduce all of it, which is
what lets the streaming separator read and write a file in blocks and still match MSST exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class InferenceSettings:
    """The config values MSST's generic ``demix`` reads."""

    chunk_size: int
    num_overlap: int
    batch_size: int
    instruments: tuple[str, ...]
    all_instruments: tuple[str, ...]
    use_amp: bool

    @classmethod
    def from_config(cls, config: Any) -> InferenceSettings:
        def section(name: str) -> Any:
            try:
                return config[name]
            except (KeyError, AttributeError, TypeError):
                raise ValueError(f"config has no '{name}' section (needed for separation)") from None

        def get(sec: Any, key: str, default: Any = None) -> Any:
            try:
                return sec[key] if key in sec else default
            except TypeError:
                return getattr(sec, key, default)

        inference = section("inference")
        training = section("training")
        chunk = get(inference, "chunk_size")
        if chunk is None:
            chunk = get(section("audio"), "chunk_size")
        if chunk is None:
            raise ValueError("config needs audio.chunk_size (or inference.chunk_size)")
        chunk_size = _positive_int(chunk, "audio.chunk_size")
        num_overlap = _positive_int(get(inference, "num_overlap"), "inference.num_overlap")
        if num_overlap > chunk_size:
            raise ValueError(
                f"inference.num_overlap={num_overlap} exceeds chunk_size={chunk_size}; the step would be zero"
            )
        batch_size = _positive_int(get(inference, "batch_size"), "inference.batch_size")
        instruments = get(training, "instruments")
        if not instruments:
            raise ValueError("config needs a non-empty training.instruments list")
        all_instruments = tuple(str(name) for name in instruments)
        target = get(training, "target_instrument")
        if target:
            if target not in all_instruments:
                raise ValueError(
                    f"training.target_instrument={target!r} is not in training.instruments {list(all_instruments)}"
                )
            chosen = (str(target),)
        else:
            chosen = all_instruments
        return cls(
            chunk_size=chunk_size,
            num_overlap=num_overlap,
            batch_size=batch_size,
            instruments=chosen,
            all_instruments=all_instruments,
            use_amp=bool(get(training, "use_amp", True)),
        )


@dataclass(frozen=True)
class ChunkBatch:
    starts: tuple[int, ...]  # chunk starts in padded coordinates
    lengths: tuple[int, ...]  # samples of each chunk that lie inside the padded signal
    window: torch.Tensor  # (chunk_size,) weights for every chunk of this batch
    final_until: int  # padded positions below this receive no later chunk


@dataclass(frozen=True)
class ChunkPlan:
    length: int
    chunk_size: int
    step: int
    border: int
    padded: bool
    fade_size: int
    batch_size: int

    @classmethod
    def for_length(cls, length: int, settings: InferenceSettings) -> ChunkPlan:
        if length < 1:
            raise ValueError(f"cannot separate an empty signal (length {length})")
        chunk = settings.chunk_size
        step = chunk // settings.num_overlap
        border = chunk - step
        return cls(
            length=length,
            chunk_size=chunk,
            step=step,
            border=border,
            padded=length > 2 * border and border > 0,
            fade_size=chunk // 10,
            batch_size=settings.batch_size,
        )

    @property
    def padded_length(self) -> int:
        return self.length + 2 * self.border if self.padded else self.length

    @property
    def offset(self) -> int:
        """Padded position of the signal's first sample."""
        return self.border if self.padded else 0

    @property
    def num_chunks(self) -> int:
        return -(-self.padded_length // self.step)

    def base_window(self) -> torch.Tensor:
        window = torch.ones(self.chunk_size)
        if self.fade_size > 0:
            window[-self.fade_size:] = torch.linspace(1, 0, self.fade_size)
            window[: self.fade_size] = torch.linspace(0, 1, self.fade_size)
        return window

    def batches(self):
        base = self.base_window()
        total = self.padded_length
        count = self.num_chunks
        for first in range(0, count, self.batch_size):
            last = min(first + self.batch_size, count) - 1
            window = base.clone()
            if last == 0:
                window[: self.fade_size] = 1
            elif last == count - 1:
                window[-self.fade_size:] = 1
            starts = tuple(k * self.step for k in range(first, last + 1))
            lengths = tuple(min(self.chunk_size, total - s) for s in starts)
            final_until = total if last == count - 1 else (last + 1) * self.step
            yield ChunkBatch(starts=starts, lengths=lengths, window=window, final_until=final_until)

    def source_indices(self, start: int, stop: int) -> torch.Tensor:
        """Indices into the unpadded signal for padded positions [start, stop) (reflection at the edges)."""
        positions = torch.arange(start, stop) - self.offset
        positions = torch.where(positions < 0, -positions, positions)
        last = self.length - 1
        return torch.where(positions > last, 2 * last - positions, positions)
