"""Streaming separation with a fixed latency: audio is pushed in blocks of any size as it arrives
(a pipe, a live input) and stems come out as soon as no later chunk can change them.

It is MSST's ``demix`` with ``batch_size = 1`` run incrementally, and gives exactly its output:
the reflect padding at the start needs ``2·border + 1`` samples to decide (MSST pads only signals
longer than ``2·border``), and a chunk is known to be the last one (no fade-out) only once the end
of the stream is inside it, which is always the case before it is processed because a chunk is run
when its whole span has arrived. Latency: a sample leaves at most ``chunk_size`` samples after it
arrived (``max(chunk_size, 2·border + 1)`` at the very start), plus the model's compute time.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bsmamba2_plugin.separate.chunk_plan import ChunkPlan, InferenceSettings
from bsmamba2_plugin.separate.overlap_add import input_channel_mode


class StreamingSeparator:
    """``push(block)`` and ``finish()`` return (stems, channels, n) arrays, n possibly 0."""

    def __init__(self, model: torch.nn.Module, config: Any, channels: int,
                 device: torch.device | str = "cpu"):
        self.settings = InferenceSettings.from_config(config)
        self.model = model
        self.device = torch.device(device)
        self.channels = channels
        self.duplicate = input_channel_mode(model, channels)
        chunk = self.settings.chunk_size
        self.chunk = chunk
        self.step = chunk // self.settings.num_overlap
        self.border = chunk - self.step
        self.fade = chunk // 10
        self.base_window = ChunkPlan.for_length(1, self.settings).base_window()
        self.num_stems = len(self.settings.instruments)
        self.target_index = None
        if self.num_stems == 1 and len(self.settings.all_instruments) > 1:
            self.target_index = self.settings.all_instruments.index(self.settings.instruments[0])
        self.received = 0
        self.pending = np.zeros((channels, 0), np.float32)  # unconsumed padded input from pending_start
        self.pending_start = 0
        self.head = np.zeros((channels, 0), np.float32)  # first samples, until padding is decided
        self.padded: bool | None = None
        self.next_chunk = 0
        self.out_channels = 2 if self.duplicate else channels
        self.result = torch.zeros((self.num_stems, self.out_channels, 0))
        self.counter = torch.zeros(0)
        self.buffer_start = 0
        self.finished = False

    @property
    def latency_samples(self) -> int:
        return max(self.chunk, 2 * self.border + 1)

    def _offset(self) -> int:
        return self.border if self.padded else 0

    def _append_padded(self, block: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, block], axis=1)

    def push(self, block: np.ndarray) -> np.ndarray:
        if self.finished:
            raise RuntimeError("push() after finish()")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"blocks must be ({self.channels}, samples) float; got {block.shape}")
        if not np.isfinite(block).all():
            raise ValueError("audio block contains NaN or infinite samples")
        self.received += block.shape[1]
        if self.padded is None:
            self.head = np.concatenate([self.head, block], axis=1)
            if self.border == 0 or self.head.shape[1] <= 2 * self.border:
                if self.border == 0:
                    self._start(padded=False)
                return self._empty()
            self._start(padded=True)
        else:
            self._append_padded(block)
        return self._run(end=None)

    def _start(self, padded: bool) -> None:
        self.padded = padded
        head, self.head = self.head, np.zeros((self.channels, 0), np.float32)
        if padded:
            left = head[:, 1:self.border + 1][:, ::-1]
            self.pending = np.concatenate([left, head], axis=1)
        else:
            self.pending = head

    def finish(self) -> np.ndarray:
        if self.finished:
            return self._empty()
        if self.received == 0:
            raise ValueError("the stream ended before any audio arrived")
        if self.padded is None:
            self._start(padded=self.received > 2 * self.border and self.border > 0)
        self.finished = True
        total = self.received + 2 * self._offset()
        if self.padded:
            # right reflect padding: the last `border` samples mirrored around the final sample
            signal_end = self.received + self.border - self.pending_start
            tail = self.pending[:, signal_end - self.border - 1:signal_end - 1][:, ::-1]
            self.pending = np.concatenate([self.pending, tail], axis=1)
        return self._run(end=total)

    def _empty(self) -> np.ndarray:
        return np.zeros((self.num_stems, 1 if self.duplicate else self.channels, 0), np.float32)

    def _run(self, end: int | None) -> np.ndarray:
        outputs = []
        available = self.pending_start + self.pending.shape[1]
        while True:
            start = self.next_chunk * self.step
            if end is None:
                if start + self.chunk > available:
                    break
                length, last = self.chunk, False
            else:
                if start >= end:
                    break
                length = min(self.chunk, end - start)
                last = start + self.step >= end
            outputs.append(self._process(start, length, last, end))
            self.next_chunk += 1
        if not outputs:
            return self._empty()
        return np.concatenate(outputs, axis=-1)

    def _process(self, start: int, length: int, last: bool, end: int | None) -> np.ndarray:
        a = start - self.pending_start
        part = torch.from_numpy(np.ascontiguousarray(self.pending[:, a:a + length]))
        if self.duplicate:
            part = part.repeat(2, 1)
        part = part.to(self.device)
        pad_mode = "reflect" if length > self.chunk // 2 else "constant"
        part = F.pad(part, (0, self.chunk - length), mode=pad_mode, value=0)
        amp = bool(self.settings.use_amp and self.device.type == "cuda")
        with torch.autocast(device_type=self.device.type, enabled=amp), torch.inference_mode():
            estimate = self.model(part[None])
        if self.target_index is not None and estimate.shape[1] == len(self.settings.all_instruments):
            estimate = estimate[:, self.target_index:self.target_index + 1]
        window = self.base_window.clone()
        if self.next_chunk == 0:
            window[: self.fade] = 1
        elif last:
            window[-self.fade:] = 1
        need = start + length - self.buffer_start
        if need > self.counter.shape[0]:
            grow = need - self.counter.shape[0]
            self.result = torch.cat([self.result, torch.zeros((*self.result.shape[:2], grow))], dim=-1)
            self.counter = torch.cat([self.counter, torch.zeros(grow)])
        o = start - self.buffer_start
        with torch.inference_mode():
            self.result[..., o:o + length] += estimate[0, ..., :length].cpu() * window[..., :length]
            self.counter[o:o + length] += window[..., :length]
        final_until = end if last else start + self.step
        signal_start = self._offset()
        signal_stop = signal_start + self.received if end is not None else None
        emit_from = max(signal_start, self.buffer_start)
        emit_to = final_until if signal_stop is None else min(final_until, signal_stop)
        block = self._empty()
        if emit_to > emit_from:
            x, y = emit_from - self.buffer_start, emit_to - self.buffer_start
            values = (self.result[..., x:y] / self.counter[x:y]).numpy()
            np.nan_to_num(values, copy=False, nan=0.0)
            block = np.ascontiguousarray(values[:, :1] if self.duplicate else values)
        done = final_until - self.buffer_start
        self.result = self.result[..., done:].clone()
        self.counter = self.counter[done:].clone()
        self.buffer_start = final_until
        # input before the next chunk's start is no longer needed, except the last border + 1
        # samples, which the right reflect padding at the end of the stream mirrors
        available = self.pending_start + self.pending.shape[1]
        keep_from = min((self.next_chunk + 1) * self.step, available - self.border - 1)
        drop = max(0, keep_from - self.pending_start)
        if end is None:
            self.pending = self.pending[:, drop:]
            self.pending_start += drop
        return block
