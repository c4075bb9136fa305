"""Evaluating a model (or a folder of estimates) over a set of tracks."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bsmamba2_plugin.evaluate.scoring import StemScore, score_stem
from bsmamba2_plugin.evaluate.track_folders import TrackFolder, read_audio


@dataclass
class Evaluation:
    scores: list[StemScore] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _estimate_file(folder: Path, track: TrackFolder, stem: str) -> Path:
    for candidate in (folder / track.name / f"{stem}.{track.extension}",
                      folder / track.name / "mixture" / f"{stem}.{track.extension}"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no estimate for {track.name}/{stem} under {folder}")


def evaluate_tracks(
    tracks: list[TrackFolder],
    *,
    separator=None,
    estimates_folder: Path | None = None,
    stems: list[str] | None = None,
    duration: float | None = None,
    silence_threshold_db: float = -60.0,
    on_track: Callable[[TrackFolder], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    metrics: Sequence[str] = (),
) -> Evaluation:
    if (separator is None) == (estimates_folder is None):
        raise ValueError("evaluate with either a model (separator) or an estimates folder")
    if duration is not None and separator is None:
        raise ValueError("--duration needs a model: it changes how the mixture is separated")
    stems = stems or (separator.instruments if separator is not None else None)
    if not stems:
        raise ValueError("name the stems to evaluate (--instruments)")
    result = Evaluation()
    for track in tracks:
        if on_track is not None:
            on_track(track)
        try:
            if separator is not None:
                mixture, rate = read_audio(track.mixture_path)
                mixture_length = mixture.shape[1]
                # --duration: each N-second segment one model input on its own (the paper's
                # input-length study); only whole segments are separated and scored
                estimates = separator.separate(mixture, rate, segment_seconds=duration, progress=progress)
                length = next(iter(estimates.values())).shape[1]
                mixture = mixture[:, :length]
            else:
                mixture = read_audio(track.mixture_path)[0] if "log_wmse" in metrics else None
                estimates, length, rate, files = {}, None, None, {}
                for stem in stems:
                    files[stem] = _estimate_file(estimates_folder, track, stem)
                    estimates[stem], rate = read_audio(files[stem])
            rows = []
            for stem in stems:
                reference, reference_rate = read_audio(track.stem_path(stem))
                if reference_rate != rate:
                    raise ValueError(f"{track.stem_path(stem)} is at {reference_rate} Hz, the mixture at {rate} Hz")
                if separator is not None and reference.shape[1] != mixture_length:
                    # (MSST's valid.py stops on the shapes' mismatch; here the track fails, the rest go on)
                    raise ValueError(f"{track.stem_path(stem)} has {reference.shape[1]} samples, {track.mixture_path} "
                                     f"{mixture_length}: a track's stems must be as long as its mixture")
                if separator is None and reference.shape[1] != estimates[stem].shape[1]:
                    warnings.warn(f"{files[stem]} has {estimates[stem].shape[1]} samples, the reference "
                                  f"{track.stem_path(stem)} {reference.shape[1]}: scored over the first "
                                  f"{min(reference.shape[1], estimates[stem].shape[1])}", UserWarning, stacklevel=2)
                if length is not None:
                    reference = reference[:, :length]
                rows.append(score_stem(track.name, stem, reference, estimates[stem], rate, silence_threshold_db,
                                       metrics, mixture))
            result.scores.extend(rows)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - one bad track is reported, the rest go on
            result.failed[track.name] = f"{type(error).__name__}: {error}"
    return result
