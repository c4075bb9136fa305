"""Per-track rows and overall figures for uSDR, cSDR and silent-region leakage."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from bsmamba2_plugin.metrics import csdr, silent_fraction, silent_leakage, usdr


@dataclass(frozen=True)
class StemScore:
    track: str
    stem: str
    seconds: float
    usdr_db: float
    csdr_db: float
    leakage_dbfs: float
    silent_fraction: float

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def score_stem(track: str, stem: str, reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
               silence_threshold_db: float) -> StemScore:
    if reference.shape[0] != estimate.shape[0]:
        raise ValueError(
            f"{track}/{stem}: reference has {reference.shape[0]} channel(s), estimate {estimate.shape[0]}"
        )
    length = min(reference.shape[1], estimate.shape[1])
    reference, estimate = reference[:, :length], estimate[:, :length]
    return StemScore(
        track=track,
        stem=stem,
        seconds=length / sample_rate,
        usdr_db=usdr(reference, estimate),
        csdr_db=csdr(reference, estimate, sample_rate),
        leakage_dbfs=silent_leakage(reference, estimate, sample_rate, silence_threshold_db=silence_threshold_db),
        silent_fraction=silent_fraction(reference, sample_rate, silence_threshold_db=silence_threshold_db),
    )


@dataclass(frozen=True)
class StemSummary:
    stem: str
    tracks: int
    usdr_mean: float
    usdr_std: float
    csdr_median: float
    leakage_mean: float
    leakage_tracks: int


def _nan_stat(values: list[float], fn) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(fn(finite)) if finite else math.nan


def summarize(scores: list[StemScore]) -> list[StemSummary]:
    """uSDR: mean over tracks (MDX/MSST). cSDR: median over tracks of per-track frame medians
    (SiSEC/museval). Leakage: mean of the per-track dBFS values over tracks that have silent regions."""
    stems = list(dict.fromkeys(score.stem for score in scores))
    summaries = []
    for stem in stems:
        rows = [s for s in scores if s.stem == stem]
        leak = [s.leakage_dbfs for s in rows]
        summaries.append(StemSummary(
            stem=stem,
            tracks=len(rows),
            usdr_mean=_nan_stat([s.usdr_db for s in rows], np.mean),
            usdr_std=_nan_stat([s.usdr_db for s in rows], np.std),
            csdr_median=_nan_stat([s.csdr_db for s in rows], np.median),
            leakage_mean=_nan_stat(leak, np.mean),
            leakage_tracks=sum(not math.isnan(v) for v in leak),
        ))
    return summaries
