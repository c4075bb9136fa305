"""Per-track rows and overall figures: uSDR, cSDR and silent-region leakage always, and any of
MSST's other `--metrics` (k_sdr, si_sdr, l1_freq, log_wmse, aura_stft, aura_mrstft, bleedless,
fullness, l1_snr) on request; those are averaged over tracks, as MSST's valid.py does."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from bsmamba2_plugin.metrics import check_metric_names, csdr, silent_fraction, silent_leakage, stem_metrics, usdr

ALWAYS = ("sdr", "csdr", "leakage")  # the columns every score has


@dataclass(frozen=True)
class StemScore:
    track: str
    stem: str
    seconds: float
    usdr_db: float
    csdr_db: float
    leakage_dbfs: float
    silent_fraction: float
    metrics: Mapping[str, float] = field(default_factory=dict)  # the requested MSST metrics beyond sdr

    def as_row(self) -> dict[str, object]:
        row: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        row.update(self.metrics)
        return row

    def value(self, metric: str) -> float:
        """This track's figure for any metric name (sdr is uSDR)."""
        own = {"sdr": self.usdr_db, "csdr": self.csdr_db, "leakage": self.leakage_dbfs}
        if metric in own:
            return own[metric]
        if metric not in self.metrics:
            raise KeyError(f"metric {metric!r} was not computed for {self.track}/{self.stem}")
        return self.metrics[metric]


def extra_metrics(metrics: Sequence[str]) -> list[str]:
    """The requested names beyond the three always computed, checked, in order, without repeats."""
    check_metric_names(list(metrics))
    return [m for m in dict.fromkeys(metrics) if m not in ALWAYS]


def score_stem(track: str, stem: str, reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
               silence_threshold_db: float, metrics: Sequence[str] = (),
               mixture: np.ndarray | None = None) -> StemScore:
    if reference.shape[0] != estimate.shape[0]:
        raise ValueError(
            f"{track}/{stem}: reference has {reference.shape[0]} channel(s), estimate {estimate.shape[0]}"
        )
    length = min(reference.shape[1], estimate.shape[1])
    reference, estimate = reference[:, :length], estimate[:, :length]
    extra = extra_metrics(metrics)
    values = stem_metrics(extra, reference, estimate, None if mixture is None else mixture[:, :length], sample_rate,
                          silence_threshold_db) if extra else {}
    return StemScore(
        track=track,
        stem=stem,
        seconds=length / sample_rate,
        usdr_db=usdr(reference, estimate),
        csdr_db=csdr(reference, estimate, sample_rate),
        leakage_dbfs=silent_leakage(reference, estimate, sample_rate, silence_threshold_db=silence_threshold_db),
        silent_fraction=silent_fraction(reference, sample_rate, silence_threshold_db=silence_threshold_db),
        metrics=values,
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
    metric_means: Mapping[str, float] = field(default_factory=dict)  # MSST metrics beyond sdr: mean over tracks
    metric_stds: Mapping[str, float] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        """The stem's overall figure for any metric name (MSST's per-instrument average)."""
        own = {"sdr": self.usdr_mean, "csdr": self.csdr_median, "leakage": self.leakage_mean}
        if metric in own:
            return own[metric]
        if metric not in self.metric_means:
            raise KeyError(f"metric {metric!r} was not computed for stem {self.stem}")
        return self.metric_means[metric]


def average(summaries: list[StemSummary], metric: str) -> float:
    """Mean over stems of the per-stem figure, NaN stems left out (MSST's `metric_avg`)."""
    values = [s.value(metric) for s in summaries if not math.isnan(s.value(metric))]
    return float(np.mean(values)) if values else math.nan


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
            metric_means={m: _nan_stat([s.metrics[m] for s in rows], np.mean) for m in rows[0].metrics},
            metric_stds={m: _nan_stat([s.metrics[m] for s in rows], np.std) for m in rows[0].metrics},
        ))
    return summaries
