"""Opening audio files as random-access block sources, whatever their length.

libsndfile (soundfile) reads WAV, FLAC, OGG, MP3 and more with seeking; anything else is decoded
once by ffmpeg (when installed) into a temporary float WAV, so the file is never held in memory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioInputError(ValueError):
    """An input file that cannot be read or used, with the file named."""


class SoundFileSource:
    """A seekable audio file read in blocks as float32 (channels, samples)."""

    def __init__(self, path: str | os.PathLike[str], display_name: str | None = None):
        self.path = Path(path)
        self.name = display_name or str(path)
        self._file = sf.SoundFile(str(self.path))
        self.frames = int(self._file.frames)
        self.channels = int(self._file.channels)
        self.sample_rate = int(self._file.samplerate)

    def read(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.frames:
            raise IndexError(f"{self.name}: samples {start}:{stop} lie outside 0:{self.frames}")
        self._file.seek(start)
        block = self._file.read(stop - start, dtype="float32", always_2d=True)
        if block.shape[0] != stop - start:
            raise AudioInputError(
                f"{self.name}: expected {stop - start} samples at {start}, the file gave {block.shape[0]} "
                f"(truncated or corrupt file)"
            )
        return block.T

    def close(self) -> None:
        self._file.close()


def _decode_with_ffmpeg(path: Path, workdir: Path) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioInputError(f"{path}: libsndfile cannot read this format and ffmpeg is not installed")
    target = workdir / "decoded.wav"
    completed = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-c:a", "pcm_f32le", str(target)],
        capture_output=True, text=True,
    )
    if completed.returncode != 0 or not target.is_file():
        detail = completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "no output"
        raise AudioInputError(f"{path}: cannot decode audio ({detail})")
    return target


def open_audio(path: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None) -> SoundFileSource:
    """Open ``path`` for block reading; ``workdir`` receives an ffmpeg decode when one is needed."""
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    try:
        source = SoundFileSource(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as first_error:
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="bsmamba2-decode-")
        try:
            decoded = _decode_with_ffmpeg(path, Path(workdir))
        except AudioInputError as error:
            raise AudioInputError(f"{error} (libsndfile: {first_error})") from first_error
        source = SoundFileSource(decoded, display_name=str(path))
    if source.frames == 0:
        source.close()
        raise AudioInputError(f"{path}: the file holds no audio samples")
    return source
