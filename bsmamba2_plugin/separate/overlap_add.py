"""Block-wise chunked separation with MSST's overlap-add, reading and writing as it goes.

Memory holds one batch of chunks and one overlap-add buffer of ``(batch_size - 1) * step + chunk``
samples per stem, whatever the signal's length. The arithmetic (chunk padding, window, the order
of the additions, the division and NaN handling) follows MSST's ``demix`` step for step, so the
output is the same as MSST's for the same model and input.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bsmamba2_plugin.separate.chunk_plan import ChunkPlan, InferenceSettings


class BlockSource(Protocol):
    """Random-access signal read in blocks: float32 (channels, stop - start)."""

    frames: int
    channels: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


class BlockSink(Protocol):
    """Receives consecutive output blocks shaped (stems, channels, samples), float32."""

    def write(self, block: np.ndarray) -> None: ...


def _model_channels(model: torch.nn.Module) -> int | None:
    inner = model.module if hasattr(model, "module") else model
    channels = getattr(inner, "audio_channels", None)
    return int(channels) if channels is not None else None


def input_channel_mode(model: torch.nn.Module, channels: int) -> bool:
    """Whether a mixture with ``channels`` channels is duplicated to stereo for this model.

    MSST's demix turns a mono mixture into two identical channels and keeps the first channel of
    each output; a model that itself declares one audio channel takes mono as it is.
    """
    expected = _model_channels(model)
    if channels == 1 and expected != 1:
        return True
    if expected is not None and channels != expected:
        raise ValueError(
            f"the model takes {expected}-channel audio but the mixture has {channels} channels "
            f"(mono is duplicated automatically; downmix other layouts first)"
        )
    return False


def separate_blocks(
    model: torch.nn.Module,
    source: BlockSource,
    sink: BlockSink,
    settings: InferenceSettings,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> None:
    """Separate ``source`` into ``sink`` chunk by chunk (see module docstring)."""
    plan = ChunkPlan.for_length(int(source.frames), settings)
    duplicate_mono = input_channel_mode(model, int(source.channels))
    out_channels = 1 if duplicate_mono else int(source.channels)
    device = torch.device(device)
    num_stems = len(settings.instruments)
    target_index = None
    if len(settings.instruments) == 1 and len(settings.all_instruments) > 1:
        target_index = settings.all_instruments.index(settings.instruments[0])

    chunk = plan.chunk_size
    capacity = (plan.batch_size - 1) * plan.step + chunk
    result = torch.zeros((num_stems, 2 if duplicate_mono else out_channels, capacity), dtype=torch.float32)
    counter = torch.zeros(capacity, dtype=torch.float32)
    buffer_start = 0  # padded position of buffer index 0
    signal_start, signal_stop = plan.offset, plan.offset + plan.length

    amp = bool(settings.use_amp and device.type == "cuda")
    with torch.autocast(device_type=device.type, enabled=amp), torch.inference_mode():
        for batch in plan.batches():
            span_start = batch.starts[0]
            span_stop = batch.starts[-1] + batch.lengths[-1]
            indices = plan.source_indices(span_start, span_stop)
            low = int(indices.min())
            high = int(indices.max()) + 1
            raw = torch.from_numpy(np.ascontiguousarray(source.read(low, high), dtype=np.float32))
            if raw.shape != (source.channels, high - low):
                raise ValueError(
                    f"source returned a block shaped {tuple(raw.shape)} for samples {low}:{high}, "
                    f"expected ({source.channels}, {high - low})"
                )
            span = raw[:, indices - low]
            if duplicate_mono:
                span = span.repeat(2, 1)

            parts = []
            for start, length in zip(batch.starts, batch.lengths):
                part = span[:, start - span_start:start - span_start + length].to(device)
                pad_mode = "reflect" if length > chunk // 2 else "constant"
                parts.append(F.pad(part, (0, chunk - length), mode=pad_mode, value=0))
            estimates = model(torch.stack(parts, dim=0))
            if estimates.ndim != 4 or estimates.shape[0] != len(parts):
                raise ValueError(
                    f"the model must return (batch, stems, channels, samples); got {tuple(estimates.shape)}"
                )
            if target_index is not None and estimates.shape[1] == len(settings.all_instruments):
                estimates = estimates[:, target_index:target_index + 1]
            if estimates.shape[1] != num_stems:
                raise ValueError(
                    f"the model returned {estimates.shape[1]} stems but the config names {num_stems} "
                    f"({list(settings.instruments)})"
                )

            window = batch.window
            for j, (start, length) in enumerate(zip(batch.starts, batch.lengths)):
                offset = start - buffer_start
                result[..., offset:offset + length] += estimates[j, ..., :length].cpu() * window[..., :length]
                counter[offset:offset + length] += window[..., :length]

            done = batch.final_until - buffer_start
            emit_from = max(signal_start, buffer_start)
            emit_to = min(signal_stop, batch.final_until)
            if emit_to > emit_from:
                a, b = emit_from - buffer_start, emit_to - buffer_start
                block = (result[..., a:b] / counter[a:b]).numpy()
                np.nan_to_num(block, copy=False, nan=0.0)
                if duplicate_mono:
                    block = block[:, :1]
                sink.write(np.ascontiguousarray(block))
                if progress is not None:
                    progress(b - a)
            keep = capacity - done
            result[..., :keep] = result[..., done:].clone()
            result[..., keep:] = 0
            counter[:keep] = counter[done:].clone()
            counter[keep:] = 0
            buffer_start = batch.final_until
