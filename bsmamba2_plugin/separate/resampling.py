"""Sample-rate conversion with libsoxr (python-soxr), in blocks.

soxr is the resampler librosa uses by default (``soxr_hq``), so a file at another rate is
converted the way MSST's ``librosa.load(path, sr=...)`` converts it, but as a stream.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from bsmamba2_plugin.separate.audio_input import SoundFileSource

QUALITY = "HQ"
BLOCK = 1 << 16


class ExactLengthResampler:
    """Streams (channels, n) blocks from one rate to another and yields exactly ``length`` samples.

    soxr's total output can differ from round(n * ratio) by a sample or two; trimming or
    zero-padding at the end keeps the output aligned with the input file.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int, length: int):
        self._stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=QUALITY)
        self.channels = channels
        self.remaining = length

    def _limit(self, block: np.ndarray) -> np.ndarray:
        block = block[: self.remaining]
        self.remaining -= block.shape[0]
        return block.T

    def push(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) in -> (channels, m) out; m may be 0."""
        return self._limit(self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32)))

    def finish(self) -> np.ndarray:
        tail = self._limit(self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True))
        if self.remaining > 0:
            tail = np.concatenate([tail, np.zeros((self.channels, self.remaining), np.float32)], axis=1)
            self.remaining = 0
        return tail


def resampled_length(length: int, in_rate: int, out_rate: int) -> int:
    return max(1, round(length * out_rate / in_rate))


def resample_to_file(source, in_rate: int, out_rate: int, path: str | os.PathLike[str]) -> SoundFileSource:
    """Write ``source`` converted to ``out_rate`` as a float WAV at ``path``, block by block."""
    length = resampled_length(source.frames, in_rate, out_rate)
    resampler = ExactLengthResampler(in_rate, out_rate, source.channels, length)
    with sf.SoundFile(str(path), "w", samplerate=out_rate, channels=source.channels, subtype="FLOAT",
                      format="WAV") as out:
        for start in range(0, source.frames, BLOCK):
            out.write(resampler.push(source.read(start, min(start + BLOCK, source.frames))).T)
        out.write(resampler.finish().T)
    return SoundFileSource(path)


def resample_array(array: np.ndarray, in_rate: int, out_rate: int, length: int | None = None) -> np.ndarray:
    """(channels, n) at ``in_rate`` -> (channels, length) at ``out_rate``, in memory."""
    if in_rate == out_rate:
        return array
    if length is None:
        length = resampled_length(array.shape[1], in_rate, out_rate)
    out = soxr.resample(np.ascontiguousarray(array.T, dtype=np.float32), in_rate, out_rate, quality=QUALITY).T
    if out.shape[1] >= length:
        return np.ascontiguousarray(out[:, :length])
    return np.concatenate([out, np.zeros((array.shape[0], length - out.shape[1]), np.float32)], axis=1)
