"""Writing separated stems to audio files block by block, each file replaced atomically at the end."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2_plugin.separate.resampling import ExactLengthResampler


class AtomicAudioFile:
    """An audio file written to a hidden temporary name in the target folder, then os.replace'd."""

    def __init__(self, path: Path, sample_rate: int, channels: int, subtype: str, file_format: str):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._raw = open(self.temporary, "w+b")
        try:
            self._audio = sf.SoundFile(self._raw, "w", samplerate=sample_rate, channels=channels,
                                       subtype=subtype, format=file_format)
        except Exception:
            self._raw.close()
            self.temporary.unlink(missing_ok=True)
            raise
        # integer PCM wraps around outside [-1, 1]; clipping is the lesser damage
        self._clip = subtype.startswith("PCM")

    def write(self, block: np.ndarray) -> None:
        if block.shape[-1] == 0:
            return
        if self._clip:
            block = np.clip(block, -1.0, 1.0)
        self._audio.write(np.ascontiguousarray(block.T))

    def commit(self) -> None:
        self._audio.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        try:
            if not self._audio.closed:
                self._audio.close()
        except Exception:  # noqa: BLE001 - the file is being discarded anyway
            pass
        self._raw.close()
        self.temporary.unlink(missing_ok=True)


class StemFilesSink:
    """Receives (stems, channels, n) blocks at the model's rate; writes one file per stem.

    Optionally converts back to the input's sample rate (exact original length), undoes MSST's
    normalisation, and writes ``mixture - stem`` as an instrumental.
    """

    def __init__(
        self,
        stem_paths: dict[str, Path],
        stem_order: list[str],
        channels: int,
        model_rate: int,
        output_rate: int,
        output_length: int,
        subtype: str,
        file_format: str,
        denormalize: tuple[float, float] | None = None,
        instrumental: tuple[str, Path, object] | None = None,  # (from stem, path, mixture source)
    ):
        self.stem_order = stem_order
        self.denormalize = denormalize
        self.files: dict[str, AtomicAudioFile] = {}
        self.resamplers: dict[str, ExactLengthResampler] = {}
        self.instrumental = instrumental
        self.mixture_position = 0
        try:
            for name in stem_order:
                self.files[name] = AtomicAudioFile(stem_paths[name], output_rate, channels, subtype, file_format)
                if model_rate != output_rate:
                    self.resamplers[name] = ExactLengthResampler(model_rate, output_rate, channels, output_length)
            if instrumental is not None:
                self.files["instrumental"] = AtomicAudioFile(instrumental[1], output_rate, channels, subtype,
                                                             file_format)
        except Exception:
            self.abort()
            raise

    def _emit(self, name: str, block: np.ndarray) -> None:
        self.files[name].write(block)
        if self.instrumental is not None and name == self.instrumental[0] and block.shape[-1]:
            mixture = self.instrumental[2]
            start = self.mixture_position
            self.mixture_position += block.shape[-1]
            self.files["instrumental"].write(mixture.read(start, self.mixture_position) - block)

    def write(self, block: np.ndarray) -> None:
        if self.denormalize is not None:
            mean, std = self.denormalize
            block = block * std + mean
        for k, name in enumerate(self.stem_order):
            stem = block[k]
            if name in self.resamplers:
                stem = self.resamplers[name].push(stem)
            self._emit(name, stem)

    def finish(self) -> dict[str, Path]:
        for name, resampler in self.resamplers.items():
            self._emit(name, resampler.finish())
        written = {}
        for name, audio in self.files.items():
            audio.commit()
            written[name] = audio.path
        return written

    def abort(self) -> None:
        for audio in self.files.values():
            audio.abort()
