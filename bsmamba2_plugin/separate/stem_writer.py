"""Writing separated stems to audio files block by block, each file replaced atomically at the end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba2_plugin.atomic_file import commit_temporary, discard_temporary, temporary_name


class AtomicAudioFile:
    """An audio file written under a hidden temporary name beside it, renamed over it on commit."""

    def __init__(self, path: Path, sample_rate: int, channels: int, subtype: str, file_format: str):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = temporary_name(path)
        self._audio = None
        try:
            self._audio = sf.SoundFile(str(self.temporary), "w", samplerate=sample_rate, channels=channels,
                                       subtype=subtype, format=file_format)
        except Exception:
            discard_temporary(self.temporary)
            raise
        # integer PCM wraps around outside [-1, 1]; clipping is the lesser damage
        self._clip = subtype.startswith("PCM")

    def write(self, block: np.ndarray) -> None:
        if block.shape[-1] == 0:
            return
        if self._clip:
            block = np.clip(block, -1.0, 1.0)
        self._audio.write(np.ascontiguousarray(block.T))

    def commit(self) -> Path:
        self._audio.close()
        return commit_temporary(self.temporary, self.path)

    def abort(self) -> None:
        try:
            if self._audio is not None and not self._audio.closed:
                self._audio.close()
        except Exception:  # noqa: BLE001 - the file is being discarded anyway
            pass
        discard_temporary(self.temporary)


class StemFiles:
    """One audio file per stem; ``finish()`` commits them all and returns {stem: path}."""

    def __init__(self, paths: dict[str, Path], sample_rate: int, channels: int, subtype: str, file_format: str):
        self.files: dict[str, AtomicAudioFile] = {}
        try:
            for name, path in paths.items():
                self.files[name] = AtomicAudioFile(path, sample_rate, channels, subtype, file_format)
        except Exception:
            self.abort()
            raise

    def write(self, stem: str, block: np.ndarray) -> None:
        self.files[stem].write(block)

    def finish(self) -> dict[str, Path]:
        return {name: audio.commit() for name, audio in self.files.items()}

    def abort(self) -> None:
        for audio in self.files.values():
            audio.abort()


class WithSpectrograms:
    """Around a file writer: keeps each stem's first ``seconds`` and draws ``<stem file>.jpg``
    beside it at the end, as MSST's ``--draw_spectro`` does."""

    def __init__(self, writer: StemFiles, paths: dict[str, Path], sample_rate: int, seconds: float):
        self.writer, self.paths, self.sample_rate = writer, paths, sample_rate
        self.limit = max(1, int(seconds * sample_rate))
        self.kept: dict[str, list[np.ndarray]] = {name: [] for name in paths}
        self.count = dict.fromkeys(paths, 0)

    def write(self, stem: str, block: np.ndarray) -> None:
        self.writer.write(stem, block)
        room = self.limit - self.count[stem]
        if room > 0 and block.shape[-1]:
            self.kept[stem].append(np.array(block[..., :room]))
            self.count[stem] += min(room, block.shape[-1])

    def finish(self) -> dict[str, Path]:
        from bsmamba2_plugin.separate.spectrogram import draw_spectrogram

        written = self.writer.finish()
        for name, path in written.items():
            audio = np.concatenate(self.kept[name], axis=-1)
            draw_spectrogram(audio, self.sample_rate, path.with_suffix(".jpg"), title=f"File: {path.stem}")
        return written

    def abort(self) -> None:
        self.writer.abort()
