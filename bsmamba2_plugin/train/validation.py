"""Validation on MSST validation folders (`<valid_path>/<track>/mixture.wav` + `<instrument>.wav`).

Separation is the package's one engine (`bsmamba2_plugin.separate.Separator`: MSST's chunked
overlap-add and normalisation, inference section of the config); scores per track and instrument are uSDR (MSST's `sdr`), cSDR
(museval v4) and the level the estimate leaks into the reference's silent regions
(`bsmamba2_plugin.metrics`). Printed as MSST's valid.py does, and appended to a CSV.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from bsmamba2_plugin.atomic_file import write_bytes_atomically
from bsmamba2_plugin.evaluate.report import msst_table
from bsmamba2_plugin.evaluate.scoring import StemScore, StemSummary, score_stem, summarize
from bsmamba2_plugin.evaluate.track_folders import TrackFolder, find_tracks, read_audio
from bsmamba2_plugin.separate import Separator

from .errors import TrainingDataError

# --metric_for_scheduler name -> (summary attribute, higher is better)
METRICS = {"sdr": ("usdr_mean", True), "csdr": ("csdr_median", True), "leakage": ("leakage_mean", False)}
CSV_NAME = "validation_metrics.csv"


@dataclass
class ValidationResult:
    scores: list[StemScore]
    summaries: list[StemSummary]

    def average(self, metric: str) -> float:
        """Mean over instruments of the per-instrument figure (MSST's `metric_avg`)."""
        attribute, _ = METRICS[metric]
        values = [getattr(s, attribute) for s in self.summaries if not math.isnan(getattr(s, attribute))]
        return float(np.mean(values)) if values else math.nan

    def per_instrument(self) -> dict[str, dict[str, float]]:
        return {s.stem: {name: getattr(s, attribute) for name, (attribute, _) in METRICS.items()}
                for s in self.summaries}


def find_validation_tracks(valid_paths: list[str], instruments: list[str], sample_rate: int) -> list[TrackFolder]:
    """Every validation track, each checked to hold a mixture and every instrument at the config's rate."""
    try:
        tracks = find_tracks([Path(p) for p in valid_paths])
    except FileNotFoundError as error:
        raise TrainingDataError(f"--valid_path: {error}") from error
    import soundfile as sf

    for track in tracks:
        mixture_frames = None
        for path in [track.mixture_path] + [track.stem_path(i) for i in instruments]:
            if not path.is_file():
                raise TrainingDataError(f"validation track {track.folder} has no {path.name} (needed for {instruments})")
            try:
                info = sf.info(str(path))
            except Exception as error:  # noqa: BLE001
                raise TrainingDataError(f"validation file {path} cannot be read: {error}") from error
            if info.samplerate != sample_rate:
                raise TrainingDataError(
                    f"validation file {path} is at {info.samplerate} Hz, the config's audio.sample_rate is "
                    f"{sample_rate} Hz"
                )
            mixture_frames = info.frames if mixture_frames is None else mixture_frames
            if info.frames != mixture_frames:
                raise TrainingDataError(f"validation file {path} has {info.frames} samples, {track.mixture_path} "
                                        f"{mixture_frames}: a track's stems must be as long as its mixture")
    return tracks


@torch.no_grad()
def validate(model: torch.nn.Module, tracks: list[TrackFolder], config: Any, device: torch.device,
             silence_threshold_db: float = -60.0, progress: bool = True,
             metrics: Sequence[str] = ()) -> ValidationResult:
    """Each track separated by the package's engine and scored: sdr, csdr, leakage, plus ``metrics``
    (MSST's names, `bsmamba2_plugin.metrics`)."""
    separator = Separator(config, model=model, device=device)  # puts the model in eval mode
    scores: list[StemScore] = []
    for track in tqdm(tracks, desc="valid", disable=not progress, leave=False):
        mixture, rate = read_audio(track.mixture_path)
        for instrument, estimate in separator.separate(mixture, rate).items():
            reference, _ = read_audio(track.stem_path(instrument))
            scores.append(score_stem(track.name, instrument, reference, estimate, rate, silence_threshold_db,
                                     metrics, mixture))
    return ValidationResult(scores, summarize(scores))


def report_text(result: ValidationResult, seconds: float) -> str:
    """MSST valid.py's lines, extended with cSDR and leakage, and the elapsed time."""
    return msst_table(result.summaries) + f"Elapsed time: {seconds:.2f} sec\n"


def append_csv(results_path: Path, epoch: int, result: ValidationResult) -> Path:
    """Rewrite `validation_metrics.csv` with this epoch's rows added (atomically)."""
    path = results_path / CSV_NAME
    previous = path.read_text() if path.is_file() else ""
    buffer = io.StringIO()
    fields = ["epoch", *result.scores[0].as_row()] if result.scores else ["epoch"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    if not previous:
        writer.writeheader()
    else:
        # a resumed run may repeat an epoch that was validated before the kill: keep the newest rows
        kept = [line for line in previous.splitlines(keepends=True)[1:] if not line.startswith(f"{epoch},")]
        buffer.write(previous.splitlines(keepends=True)[0] + "".join(kept))
    for score in result.scores:
        writer.writerow({"epoch": epoch, **{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                            for k, v in score.as_row().items()}})
    write_bytes_atomically(path, buffer.getvalue().encode())
    return path


def timed_validation(model, tracks, config, device, progress=True, metrics: Sequence[str] = ()
                     ) -> tuple[ValidationResult, float]:
    start = time.time()
    result = validate(model, tracks, config, device, progress=progress, metrics=metrics)
    return result, time.time() - start
