"""Finding MSST training tracks (`<data_path>/<track>/<instrument>.wav|.flac`) and checking every file.

Each file is opened once at start-up: readable, the config's sample rate, mono or the config's
channel count, not truncated. A broken file among good ones is skipped with a warning and
counted in `ScanReport`; an instrument left with no usable file at all is an error listing why.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from .errors import TrainingDataError

AUDIO_EXTENSIONS = ("wav", "flac")  # MSST's file_types, in its order of preference

# libsndfile notes a WAV whose data chunk is shorter than its header claims as "data : N (should be M)".
TRUNCATED_WAV = re.compile(r"^data\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)


@dataclass(frozen=True)
class AudioFile:
    path: Path
    frames: int
    channels: int


@dataclass
class Track:
    """One track folder: the usable file of each instrument it has, and its usable length."""

    folder: Path
    files: dict[str, AudioFile]

    @property
    def length(self) -> int:
        # As MSST: the shortest stem, so a window read at any offset exists in every stem.
        return min(f.frames for f in self.files.values())


@dataclass
class ScanReport:
    tracks: int = 0
    files_ok: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per skipped file or track, with the reason

    def summary(self) -> str:
        text = f"{self.tracks} track(s), {self.files_ok} audio file(s) used, {len(self.skipped)} skipped"
        return text + "".join(f"\n  skipped: {line}" for line in self.skipped)


def check_audio_file(path: Path, sample_rate: int, channels: int) -> AudioFile:
    """The file's length and channels; a TrainingDataError naming the file and the problem otherwise."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # noqa: BLE001 - libsndfile raises several types for unreadable files
        raise TrainingDataError(f"{path}: cannot be read as audio ({error})") from error
    if info.samplerate != sample_rate:
        raise TrainingDataError(
            f"{path}: sample rate {info.samplerate} Hz, but the config's audio.sample_rate is {sample_rate} Hz "
            f"(resample the file, e.g. with sox or ffmpeg)"
        )
    if info.channels not in (1, channels):
        raise TrainingDataError(
            f"{path}: {info.channels} channels, expected {channels} (audio.num_channels) or 1 (mono is duplicated)"
        )
    if info.frames <= 0:
        raise TrainingDataError(f"{path}: contains no audio frames")
    if TRUNCATED_WAV.search(info.extra_info or ""):
        raise TrainingDataError(f"{path}: truncated (its header promises more data than the file holds)")
    try:  # a truncated FLAC only shows when its end is decoded
        with sf.SoundFile(str(path)) as handle:
            handle.seek(info.frames - 1)
            if handle.read(1, dtype="float32").shape[0] != 1:
                raise TrainingDataError(f"{path}: truncated (cannot read its last frame)")
    except TrainingDataError:
        raise
    except Exception as error:  # noqa: BLE001
        raise TrainingDataError(f"{path}: truncated or corrupt ({error})") from error
    return AudioFile(path, int(info.frames), int(info.channels))


def find_instrument_file(folder: Path, instrument: str) -> Path | None:
    for extension in AUDIO_EXTENSIONS:
        candidate = folder / f"{instrument}.{extension}"
        if candidate.is_file():
            return candidate
    return None


def scan_tracks(
    data_paths: Sequence[str | os.PathLike[str]],
    instruments: Sequence[str],
    sample_rate: int,
    channels: int,
    require_all_instruments: bool,
) -> tuple[list[Track], ScanReport]:
    """Every usable track under `data_paths`.

    require_all_instruments: True for aligned data (dataset type 4), where a track missing a
    stem cannot give a window; with random mixing (type 1) such a track still serves the
    instruments it has.
    """
    if not data_paths:
        raise TrainingDataError("no --data_path given: pass one or more folders of <track>/<instrument>.wav")
    report = ScanReport()
    tracks: list[Track] = []
    for root in map(Path, data_paths):
        if not root.is_dir():
            raise TrainingDataError(f"--data_path {root} does not exist or is not a folder")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if not folders:
            raise TrainingDataError(
                f"--data_path {root} has no track folders; expected {root}/<track>/<instrument>.wav|.flac "
                f"for instruments {list(instruments)}"
            )
        for folder in folders:
            files: dict[str, AudioFile] = {}
            problems: list[str] = []
            for instrument in instruments:
                path = find_instrument_file(folder, instrument)
                if path is None:
                    problems.append(f"{folder}: no {instrument}.wav or {instrument}.flac")
                    continue
                try:
                    files[instrument] = check_audio_file(path, sample_rate, channels)
                except TrainingDataError as error:
                    problems.append(str(error))
            if problems and (require_all_instruments or not files):
                reason = "; ".join(problems)
                report.skipped.append(f"track {folder} ({reason})")
                continue
            report.skipped.extend(problems)
            tracks.append(Track(folder, files))
            report.files_ok += len(files)
    report.tracks = len(tracks)
    missing = [i for i in instruments if not any(i in t.files for t in tracks)]
    if missing:
        raise TrainingDataError(
            f"no usable {' / '.join(missing)} file under {', '.join(map(str, data_paths))}. "
            f"Scan: {report.summary()}"
        )
    for line in report.skipped:
        warnings.warn(f"training data skipped: {line}", stacklevel=2)
    return tracks, report
