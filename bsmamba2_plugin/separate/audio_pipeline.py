"""Everything around the overlap-add core, for arrays and files alike, and its inverse.

In:  channel check (mono stays mono, more than two is an error unless downmixing) -> conversion to
     the model's rate -> MSST's ``inference.normalize``.
Out: normalisation undone -> conversion back to the input's rate (exact length) -> the
     instrumental (mixture minus vocals) -> a writer (files, or arrays in memory).

Digital silence (or any signal whose mono mix has zero variance) is not normalised: there is
nothing to scale, MSST's division by zero would give NaN, and so silence in is silence out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bsmamba2_plugin.separate.audio_input import AudioInputError
from bsmamba2_plugin.separate.resampling import ExactLengthResampler, resample_array, resample_to_file


class BlockSource(Protocol):
    """Random-access signal read in blocks: float32 (channels, stop - start)."""

    frames: int
    channels: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


class ArraySource:
    """A (channels, samples) array seen as a block source."""

    def __init__(self, mixture: np.ndarray, sample_rate: int = 0):
        self.data = mixture
        self.channels, self.frames = mixture.shape
        self.sample_rate = sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[:, start:stop]

    def close(self) -> None:
        pass


class DownmixSource:
    """Averages every channel into one (mono) channel."""

    def __init__(self, source: Any):
        self.source = source
        self.frames = source.frames
        self.channels = 1
        self.sample_rate = source.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.source.read(start, stop).mean(axis=0, keepdims=True, dtype=np.float32)


@dataclass(frozen=True)
class Normalization:
    """MSST's ``normalize_audio``: (x - mean) / std with the statistics of the mono mix."""

    mean: float
    std: float

    @classmethod
    def measure(cls, source: Any, block: int = 1 << 18) -> Normalization | None:
        """One pass of blocks, in float64; None for a signal with zero variance (see module doc)."""
        total = total_sq = 0.0
        for start in range(0, source.frames, block):
            mono = source.read(start, min(start + block, source.frames)).astype(np.float64).mean(axis=0)
            total += float(mono.sum())
            total_sq += float(np.square(mono).sum())
        mean = total / source.frames
        std = max(total_sq / source.frames - mean * mean, 0.0) ** 0.5
        return cls(mean, std) if std > 0 else None

    def apply(self, source: Any) -> NormalizedSource:
        return NormalizedSource(source, self)

    def undo(self, block: np.ndarray) -> np.ndarray:
        return (block * self.std + self.mean).astype(np.float32, copy=False)


class NormalizedSource:
    def __init__(self, source: Any, normalization: Normalization):
        self.source, self.normalization = source, normalization
        self.frames, self.channels = source.frames, source.channels

    def read(self, start: int, stop: int) -> np.ndarray:
        n = self.normalization
        return ((self.source.read(start, stop) - n.mean) / n.std).astype(np.float32, copy=False)


@dataclass
class PreparedInput:
    """What the core separates (``model_input``) and what the output side needs to undo it."""

    model_input: Any
    mixture: Any  # after the channel check, at the input's rate: the instrumental is taken from it
    input_rate: int
    normalization: Normalization | None
    opened: list = field(default_factory=list)  # sources to close

    def close(self) -> None:
        for source in self.opened:
            source.close()


def prepare_input(source: Any, input_rate: int, model_rate: int, normalize: bool, *, downmix: bool = False,
                  workdir: Path | None = None, name: str = "mixture") -> PreparedInput:
    """Channels, rate and normalisation for the model. Arrays are converted in memory; file
    sources through a temporary float WAV in ``workdir``, so a file is never held whole."""
    if source.channels > 2:
        if not downmix:
            raise AudioInputError(f"{name}: {source.channels} channels; the model takes mono or stereo. "
                                  f"Pass --downmix (downmix=True) to average all channels into mono")
        source = DownmixSource(source)
    prepared = PreparedInput(model_input=source, mixture=source, input_rate=input_rate, normalization=None)
    if input_rate != model_rate:
        if isinstance(source, ArraySource) or workdir is None:
            data = source.data if isinstance(source, ArraySource) else source.read(0, source.frames)
            converted = ArraySource(resample_array(data, input_rate, model_rate), model_rate)
        else:
            converted = resample_to_file(source, input_rate, model_rate, workdir / "model_rate.wav")
            prepared.opened.append(converted)
        prepared.model_input = converted
    if normalize:
        prepared.normalization = Normalization.measure(prepared.model_input)
        if prepared.normalization is not None:
            prepared.model_input = prepared.normalization.apply(prepared.model_input)
    return prepared


class StemWriter(Protocol):
    """Receives each stem's consecutive blocks (channels, n) at the input's rate."""

    def write(self, stem: str, block: np.ndarray) -> None: ...

    def finish(self) -> Any: ...

    def abort(self) -> None: ...


class StemArrays:
    """Collects the stems in memory: ``finish()`` gives {stem: (channels, samples) float32}."""

    def __init__(self, stems: list[str], channels: int):
        self.blocks: dict[str, list[np.ndarray]] = {name: [] for name in stems}
        self.channels = channels

    def write(self, stem: str, block: np.ndarray) -> None:
        self.blocks[stem].append(np.asarray(block, dtype=np.float32))

    def finish(self) -> dict[str, np.ndarray]:
        return {name: (np.concatenate(parts, axis=-1) if parts else np.zeros((self.channels, 0), np.float32))
                for name, parts in self.blocks.items()}

    def abort(self) -> None:
        self.blocks.clear()


class StemOutput:
    """Model-rate blocks (stems, channels, n) -> the writer, with every input step undone."""

    def __init__(self, writer: Any, stems: list[str], prepared: PreparedInput, model_rate: int,
                 output_length: int, instrumental_from: str | None = None):
        self.writer, self.stems, self.prepared = writer, stems, prepared
        self.resamplers: dict[str, ExactLengthResampler] = {}
        if prepared.input_rate != model_rate:
            channels = prepared.mixture.channels
            self.resamplers = {name: ExactLengthResampler(model_rate, prepared.input_rate, channels, output_length)
                               for name in stems}
        self.instrumental_from = instrumental_from
        self.mixture_position = 0

    def _emit(self, name: str, block: np.ndarray) -> None:
        self.writer.write(name, block)
        if name == self.instrumental_from and block.shape[-1]:
            start = self.mixture_position
            self.mixture_position += block.shape[-1]
            self.writer.write("instrumental", self.prepared.mixture.read(start, self.mixture_position) - block)

    def write(self, block: np.ndarray) -> None:
        if self.prepared.normalization is not None:
            block = self.prepared.normalization.undo(block)
        for k, name in enumerate(self.stems):
            stem = block[k]
            if name in self.resamplers:
                stem = self.resamplers[name].push(stem)
            self._emit(name, stem)

    def finish(self) -> Any:
        for name, resampler in self.resamplers.items():
            self._emit(name, resampler.finish())
        return self.writer.finish()

    def abort(self) -> None:
        self.writer.abort()
