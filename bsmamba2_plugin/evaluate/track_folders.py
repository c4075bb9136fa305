"""Finding evaluation tracks: MUSDB18HQ (``test/<track>/mixture.wav`` + stems) and MSST's validation
layout (``<valid_path>/*/mixture.<ext>`` + ``<instrument>.<ext>``) are the same shape."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class TrackFolder:
    name: str
    folder: Path
    extension: str

    @property
    def mixture_path(self) -> Path:
        return self.folder / f"mixture.{self.extension}"

    def stem_path(self, stem: str) -> Path:
        return self.folder / f"{stem}.{self.extension}"


def find_tracks(valid_paths: list[Path], extension: str = "wav") -> list[TrackFolder]:
    tracks: list[TrackFolder] = []
    for root in valid_paths:
        if not root.is_dir():
            raise FileNotFoundError(f"evaluation folder {root} does not exist")
        found = sorted(p.parent for p in root.glob(f"*/mixture.{extension}"))
        if not found and (root / f"mixture.{extension}").is_file():
            found = [root]  # the path is itself one track
        tracks.extend(TrackFolder(folder.name, folder, extension) for folder in found)
    if not tracks:
        raise FileNotFoundError(
            f"no <track>/mixture.{extension} under {', '.join(map(str, valid_paths))} "
            f"(expected MUSDB18HQ's test/<track>/ folders or MSST's validation layout)"
        )
    return tracks


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the sample rate; a clear error naming the file otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - any decode failure becomes one message
        raise ValueError(f"cannot read {path}: {error}") from error
    return data.T, int(rate)
