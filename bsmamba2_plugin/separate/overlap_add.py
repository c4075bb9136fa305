"""The one chunk-and-overlap-add core: fed whole blocks or pushed samples, it gives MSST's output.

MSST's ``demix`` (generic branch) reflect-pads the mixture by ``border = chunk - step`` on both
sides when it is longer than ``2 * border``, cuts chunks every ``step`` samples, runs them
``batch_size`` at a time and overlap-adds them with a linear-fade window. Two quirks of its window
must be reproduced for an identical result: the window is chosen once per *batch*, so only a batch
that holds nothing but the first chunk drops its fade-in, and every chunk of the batch that holds
the last chunk drops its fade-out.

`OverlapAdd` does this incrementally. A batch runs once every sample of its chunks has arrived;
such a batch can never be the last one (the signal, and so the right padding, goes on beyond
it), so nothing has to be known in advance and the result is the same whatever the block sizes.
The batch holding the last chunk runs in `finish()`. Memory holds one batch of input and one
overlap-add buffer of ``(batch_size - 1) * step + chunk`` samples per stem. Latency in samples:
`ChunkSchedule.latency`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# (chunks, channels, chunk) on the runner's device -> (chunks, stems, channels, chunk) on the CPU
ChunkFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ChunkSchedule:
    chunk: int
    step: int
    fade: int
    batch_size: int
    pad_edges: bool  # reflect-pad by `border` at both ends (MSST); False: chunks start at sample 0

    @classmethod
    def msst(cls, chunk: int, num_overlap: int, batch_size: int) -> ChunkSchedule:
        return cls(chunk=chunk, step=chunk // num_overlap, fade=chunk // 10, batch_size=batch_size, pad_edges=True)

    @classmethod
    def segments(cls, segment: int, batch_size: int) -> ChunkSchedule:
        """Independent, non-overlapping inputs of exactly ``segment`` samples (unit window)."""
        return cls(chunk=segment, step=segment, fade=0, batch_size=batch_size, pad_edges=False)

    @property
    def border(self) -> int:
        return self.chunk - self.step

    @property
    def latency(self) -> int:
        """Samples a pushed sample may wait before its output leaves (compute time aside)."""
        batch_span = (self.batch_size - 1) * self.step + self.chunk
        return max(batch_span, 2 * self.border + 1) if self.pad_edges else batch_span

    def base_window(self) -> torch.Tensor:
        window = torch.ones(self.chunk)
        if self.fade > 0:
            window[-self.fade:] = torch.linspace(1, 0, self.fade)
            window[: self.fade] = torch.linspace(0, 1, self.fade)
        return window


class OverlapAdd:
    """``push(block)`` and ``finish()`` return (stems, channels, n) float32 arrays, n possibly 0."""

    def __init__(self, schedule: ChunkSchedule, run_chunks: ChunkFunction, channels: int, stems: int,
                 device: torch.device | str = "cpu", progress: Callable[[int], None] | None = None):
        self.schedule = schedule
        self.run_chunks = run_chunks
        self.channels = channels
        self.stems = stems
        self.device = torch.device(device)
        self.progress = progress
        self.base_window = schedule.base_window()
        self.received = 0
        self.head = np.zeros((channels, 0), np.float32)  # first samples, until padding is decided
        self.padded: bool | None = None
        self.pending = np.zeros((channels, 0), np.float32)  # padded input from pending_start on
        self.pending_start = 0
        self.next_chunk = 0
        capacity = (schedule.batch_size - 1) * schedule.step + schedule.chunk
        self.result = torch.zeros((stems, channels, capacity), dtype=torch.float32)
        self.counter = torch.zeros(capacity, dtype=torch.float32)
        self.buffer_start = 0  # padded position of buffer index 0
        self.finished = False

    @property
    def offset(self) -> int:
        """Padded position of the signal's first sample."""
        return self.schedule.border if self.padded else 0

    def _empty(self) -> np.ndarray:
        return np.zeros((self.stems, self.channels, 0), np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        if self.finished:
            raise RuntimeError("push() after finish()")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"blocks must be shaped ({self.channels}, samples); got {block.shape}")
        block = np.asarray(block, dtype=np.float32)
        self.received += block.shape[1]
        border = self.schedule.border
        if self.padded is None:
            self.head = np.concatenate([self.head, block], axis=1)
            if self.schedule.pad_edges and border > 0 and self.head.shape[1] <= 2 * border:
                return self._empty()  # MSST pads only signals longer than 2 * border: not known yet
            self._start(padded=self.schedule.pad_edges and border > 0)
        else:
            self.pending = np.concatenate([self.pending, block], axis=1)
        return self._run(end=None)

    def finish(self) -> np.ndarray:
        if self.finished:
            return self._empty()
        if self.received == 0:
            raise ValueError("cannot separate an empty signal (no samples arrived)")
        border = self.schedule.border
        if self.padded is None:
            self._start(padded=self.schedule.pad_edges and border > 0 and self.received > 2 * border)
        self.finished = True
        if self.padded:  # right reflect padding: the last `border` samples mirrored around the final one
            signal_end = self.offset + self.received - self.pending_start
            tail = self.pending[:, signal_end - border - 1:signal_end - 1][:, ::-1]
            self.pending = np.concatenate([self.pending, tail], axis=1)
        return self._run(end=self.received + 2 * self.offset)

    def _start(self, padded: bool) -> None:
        self.padded = padded
        head, self.head = self.head, np.zeros((self.channels, 0), np.float32)
        if padded:
            left = head[:, 1:self.schedule.border + 1][:, ::-1]
            self.pending = np.concatenate([left, head], axis=1)
        else:
            self.pending = head

    def _run(self, end: int | None) -> np.ndarray:
        """Every batch that can run now; ``end`` (the padded length) only when the input is complete."""
        s = self.schedule
        outputs = []
        available = self.pending_start + self.pending.shape[1]
        while True:
            first = self.next_chunk
            if end is None:
                last = first + s.batch_size - 1
                right_pad = s.border if self.padded else 0
                # every sample of the batch has arrived, and more input (or padding) follows it,
                # so this batch cannot be the one holding the last chunk
                if last * s.step + s.chunk > available or (last + 1) * s.step >= available + right_pad:
                    break
                final = False
            else:
                count = -(-end // s.step)
                if first >= count:
                    break
                last = min(first + s.batch_size, count) - 1
                final = last == count - 1
            outputs.append(self._process(first, last, final, end))
            self.next_chunk = last + 1
        if not outputs:
            return self._empty()
        return np.concatenate(outputs, axis=-1)

    def _process(self, first: int, last: int, final: bool, end: int | None) -> np.ndarray:
        s = self.schedule
        starts = [k * s.step for k in range(first, last + 1)]
        lengths = [s.chunk if end is None else min(s.chunk, end - start) for start in starts]
        parts = []
        for start, length in zip(starts, lengths):
            a = start - self.pending_start
            part = torch.from_numpy(np.ascontiguousarray(self.pending[:, a:a + length])).to(self.device)
            pad_mode = "reflect" if length > s.chunk // 2 else "constant"
            parts.append(F.pad(part, (0, s.chunk - length), mode=pad_mode, value=0))
        estimates = self.run_chunks(torch.stack(parts, dim=0))

        window = self.base_window.clone()
        if s.fade > 0:
            if last == 0:
                window[: s.fade] = 1
            elif final:
                window[-s.fade:] = 1
        with torch.inference_mode():
            for j, (start, length) in enumerate(zip(starts, lengths)):
                o = start - self.buffer_start
                self.result[..., o:o + length] += estimates[j, ..., :length] * window[..., :length]
                self.counter[o:o + length] += window[..., :length]

        final_until = end if final else (last + 1) * s.step
        emit_from = max(self.offset, self.buffer_start)
        emit_to = min(final_until, self.offset + self.received)
        block = self._empty()
        if emit_to > emit_from:
            x, y = emit_from - self.buffer_start, emit_to - self.buffer_start
            values = (self.result[..., x:y] / self.counter[x:y]).numpy()
            np.nan_to_num(values, copy=False, nan=0.0)
            block = np.ascontiguousarray(values)
            if self.progress is not None:
                self.progress(y - x)
        done = final_until - self.buffer_start
        keep = self.counter.shape[0] - done
        self.result[..., :keep] = self.result[..., done:].clone()
        self.result[..., keep:] = 0
        self.counter[:keep] = self.counter[done:].clone()
        self.counter[keep:] = 0
        self.buffer_start = final_until
        if end is None:
            # input before the next chunk is no longer needed, except the last border + 1 samples,
            # which the right reflect padding at the end mirrors
            available = self.pending_start + self.pending.shape[1]
            keep_from = min((last + 1) * s.step, available - s.border - 1)
            drop = max(0, keep_from - self.pending_start)
            self.pending = self.pending[:, drop:]
            self.pending_start += drop
        return block


def stream_source(core: OverlapAdd, source, emit: Callable[[np.ndarray], None],
                  block: int | None = None) -> None:
    """Feed a block source (``frames``, ``channels``, ``read(start, stop)``) through ``core`` in
    order, handing every output block to ``emit``."""
    block = block or core.schedule.batch_size * core.schedule.step
    for start in range(0, source.frames, block):
        stop = min(start + block, source.frames)
        data = source.read(start, stop)
        if data.shape != (source.channels, stop - start):
            raise ValueError(f"source returned a block shaped {tuple(data.shape)} for samples {start}:{stop}, "
                             f"expected ({source.channels}, {stop - start})")
        out = core.push(data)
        if out.shape[-1]:
            emit(out)
    out = core.finish()
    if out.shape[-1]:
        emit(out)
