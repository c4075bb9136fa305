"""Evaluating a model (or a folder of estimates) over a set of tracks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bsmamba2_plugin.evaluate.dataset import Track, read_audio
from bsmamba2_plugin.evaluate.scoring import StemScore, score_stem
from bsmamba2_plugin.evaluate.segments import separate_in_segments
from bsmamba2_plugin.separate.resampling import resample_array


@dataclass
class Evaluation:
    scores: list[StemScore] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def segmented_estimates(separator, mixture: np.ndarray, rate: int, duration: float
                        ) -> tuple[dict[str, np.ndarray], int]:
    """Estimates from independent ``duration``-second inputs; returns them and the evaluated length
    at ``rate`` (whole segments only: the trailing remainder is left out of the evaluation)."""
    settings = separator.settings
    model_rate = separator.sample_rate
    segment = int(round(duration * model_rate))
    if segment < 1:
        raise ValueError(f"--duration {duration} is shorter than one sample at {model_rate} Hz")
    at_model_rate = resample_array(mixture, rate, model_rate)
    count = at_model_rate.shape[1] // segment
    if count == 0:
        raise ValueError(f"track is shorter than one {duration} s segment")
    used = at_model_rate[:, : count * segment]
    target = None
    if len(settings.instruments) == 1 and len(settings.all_instruments) > 1:
        target = settings.all_instruments.index(settings.instruments[0])
    stems = separate_in_segments(separator.model, np.ascontiguousarray(used), segment, settings.batch_size,
                                 separator.device, len(settings.instruments), target)
    length = round(count * segment * rate / model_rate)
    return ({name: resample_array(stems[k], model_rate, rate, length=length)
             for k, name in enumerate(settings.instruments)}, length)


def _estimate_file(folder: Path, track: Track, stem: str) -> Path:
    for candidate in (folder / track.name / f"{stem}.{track.extension}",
                      folder / track.name / "mixture" / f"{stem}.{track.extension}"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no estimate for {track.name}/{stem} under {folder}")


def evaluate_tracks(
    tracks: list[Track],
    *,
    separator=None,
    estimates_folder: Path | None = None,
    stems: list[str] | None = None,
    duration: float | None = None,
    silence_threshold_db: float = -60.0,
    on_track: Callable[[Track], None] | None = None,
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
                if duration is None:
                    estimates = separator.separate(mixture, rate)
                    length = mixture.shape[1]
                else:
                    estimates, length = segmented_estimates(separator, mixture, rate, duration)
            else:
                mixture = read_audio(track.mixture_path)[0] if "log_wmse" in metrics else None
                estimates, length, rate = {}, None, None
                for stem in stems:
                    estimates[stem], rate = read_audio(_estimate_file(estimates_folder, track, stem))
            rows = []
            for stem in stems:
                reference, reference_rate = read_audio(track.stem_path(stem))
                if reference_rate != rate:
                    raise ValueError(f"{track.stem_path(stem)} is at {reference_rate} Hz, the mixture at {rate} Hz")
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
