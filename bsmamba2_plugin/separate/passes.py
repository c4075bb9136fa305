"""MSST's extra inference passes: ``--bigshifts N`` and ``--use_tta``, each pass a view of the source.

MSST (utils/model_utils.py) separates the mixture circularly shifted by ``k * (length // N)``
samples for k < N, shifts every result back and averages them (bigshifts); with TTA it does the
same for the channel-swapped and the polarity-inverted mixture, undoes the swap or the sign on the
outputs and averages the three. Here a shifted, swapped or inverted mixture is an index map over
the source, never a copy, and the passes are summed into an accumulator (in memory for arrays, a
temporary file for files), so a long file keeps bounded memory with any number of passes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Pass:
    shift: int  # the mixture is rolled right by this many samples (np.roll semantics)
    swap: bool  # channels reversed
    negate: bool  # polarity inverted

    def undo(self, block: np.ndarray) -> np.ndarray:
        """Output of this pass (stems, channels, n) -> the estimate of the plain mixture."""
        if self.swap:
            block = block[:, ::-1]
        if self.negate:
            block = -block
        return block


def msst_passes(length: int, bigshifts: int, use_tta: bool) -> list[Pass]:
    """In MSST's order: the plain mixture's shifts, then the swapped, then the inverted one's."""
    step = length // bigshifts
    shifts = [k * step for k in range(bigshifts)]
    variants = [(False, False)] + ([(True, False), (False, True)] if use_tta else [])
    return [Pass(shift, swap, negate) for swap, negate in variants for shift in shifts]


def circular_ranges(start: int, stop: int, offset: int, length: int) -> list[tuple[int, int, int]]:
    """Positions [start, stop) mapped to (p - offset) mod length, as contiguous pieces:
    (first position of the piece relative to start, mapped start, mapped stop)."""
    pieces = []
    position = start
    while position < stop:
        mapped = (position - offset) % length
        size = min(stop - position, length - mapped)
        pieces.append((position - start, mapped, mapped + size))
        position += size
    return pieces


class PassSource:
    """The source as one pass sees it: rolled by ``shift``, channels swapped, polarity inverted."""

    def __init__(self, source, how: Pass):
        self.source, self.how = source, how
        self.frames, self.channels = source.frames, source.channels

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = [self.source.read(a, b) for _, a, b in circular_ranges(start, stop, self.how.shift, self.frames)]
        block = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
        if self.how.swap:
            block = block[::-1]
        if self.how.negate:
            block = -block
        return np.ascontiguousarray(block, dtype=np.float32)


class MemoryAccumulator:
    """Sum of the passes' estimates, (stems, channels, frames) float32 in memory."""

    def __init__(self, stems: int, channels: int, frames: int):
        self.data = np.zeros((stems, channels, frames), np.float32)

    def add(self, start: int, block: np.ndarray) -> None:
        self.data[..., start:start + block.shape[-1]] += block

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[..., start:stop]

    def close(self) -> None:
        self.data = None


class FileAccumulator:
    """The same sum in a temporary file (samples-major, so a range of samples is one byte range)."""

    def __init__(self, stems: int, channels: int, frames: int, path: Path):
        self.shape = (stems, channels)
        self.width = stems * channels
        self.path = path
        self.handle = open(path, "w+b")
        self.handle.truncate(frames * self.width * 4)  # sparse zeros

    def read(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.width
        raw = os.pread(self.handle.fileno(), count * 4, start * self.width * 4)
        flat = np.frombuffer(raw, dtype=np.float32, count=count)
        return flat.reshape(stop - start, *self.shape).transpose(1, 2, 0)

    def add(self, start: int, block: np.ndarray) -> None:
        total = self.read(start, start + block.shape[-1]) + block
        data = np.ascontiguousarray(total.transpose(2, 0, 1), dtype=np.float32).tobytes()
        os.pwrite(self.handle.fileno(), data, start * self.width * 4)

    def close(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def run_passes(
    source,
    passes: list[Pass],
    separate_pass: Callable[[object, Callable[[np.ndarray], None]], None],
    emit: Callable[[np.ndarray], None],
    stems: int,
    channels: int,
    workdir: Path | None = None,
    block: int = 1 << 16,
) -> None:
    """Separate ``source`` once per pass and hand the average to ``emit`` in blocks, in order.

    ``separate_pass(view, emit_block)`` separates one view of the source, emitting its blocks in
    order. A single plain pass goes straight to ``emit``: no accumulator, MSST's exact output.
    """
    if passes == [Pass(0, False, False)]:
        separate_pass(source, emit)
        return
    frames = source.frames
    accumulator = (FileAccumulator(stems, channels, frames, workdir / "passes.f32") if workdir is not None
                   else MemoryAccumulator(stems, channels, frames))
    try:
        for how in passes:
            position = [0]

            def add(out: np.ndarray, how: Pass = how, position: list[int] = position) -> None:
                out = how.undo(out)
                start = position[0]
                position[0] += out.shape[-1]
                for offset, a, b in circular_ranges(start, position[0], how.shift, frames):
                    accumulator.add(a, out[..., offset:offset + b - a])

            separate_pass(PassSource(source, how), add)
        scale = np.float32(len(passes))
        for start in range(0, frames, block):
            emit(accumulator.read(start, min(start + block, frames)) / scale)
    finally:
        accumulator.close()
