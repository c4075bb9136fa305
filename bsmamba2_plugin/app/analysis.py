"""What the page shows about a separated file, read block by block (bounded memory at any length).

- a spectrogram picture of the mixture and of each stem (power averaged into a fixed number of
  columns, so an hour-long track costs one read and one small image);
- each stem's level where the vocal stem is silent, by ``bsmamba2_plugin.metrics``' silent-region
  rule (1 s frames below -60 dBFS), and its overall level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bsmamba2_plugin.metrics import LEAKAGE_FLOOR_DB, silent_fraction, silent_leakage
from bsmamba2_plugin.separate.audio_input import open_audio
from bsmamba2_plugin.separate.spectrogram import N_FFT, TOP_DB

# The engine's draw_spectro draws the first seconds of a track from memory; the page shows the whole
# track, so it averages frames into columns while reading (same FFT size and dB range).
SPECTROGRAM_FFT = N_FFT
SPECTROGRAM_COLUMNS = 600
READ_BLOCK = 1 << 18  # samples per read
FLOOR_DB = -120.0


def _level_db(energy: float, count: int) -> float:
    if count == 0:
        return math.nan
    mean = energy / count
    return LEAKAGE_FLOOR_DB if mean <= 0 else max(LEAKAGE_FLOOR_DB, 10.0 * math.log10(mean))


def _frame_power(source, first: int, count: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Summed power spectrum of ``count`` Hann frames starting at ``first``, every ``hop`` samples."""
    n_fft = len(window)
    mono = source.read(first, min(source.frames, first + (count - 1) * hop + n_fft)).mean(axis=0)
    padded = np.zeros((count - 1) * hop + n_fft, dtype=np.float32)  # zeros only past a file shorter than n_fft
    padded[:len(mono)] = mono
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.sum(np.abs(np.fft.rfft(frames * window, axis=1)) ** 2, axis=0)


def spectrogram_columns(path: str | Path, workdir: str | Path, columns: int = SPECTROGRAM_COLUMNS,
                        n_fft: int = SPECTROGRAM_FFT) -> tuple[np.ndarray, float, int]:
    """Power spectrogram in dB (bins, columns) of the channel average, and the duration in seconds.

    Each column averages the power of all Hann frames (hop n_fft/2) inside its stretch of the file;
    a file shorter than one frame per column gets fewer columns.
    """
    source = open_audio(path, workdir)
    try:
        frames, rate = source.frames, source.sample_rate
        hop = n_fft // 2
        count = max(1, min(columns, frames // hop))
        edges = np.linspace(0, frames, count + 1).astype(np.int64)
        window = np.hanning(n_fft).astype(np.float32)
        power = np.zeros((n_fft // 2 + 1, count), dtype=np.float64)
        for column in range(count):
            start, stop = int(edges[column]), int(edges[column + 1])
            total = np.zeros(n_fft // 2 + 1)
            used = 0
            offsets = np.arange(start, stop, hop)
            offsets = offsets[offsets + n_fft <= frames]  # whole frames only: a cut edge splatters
            group = max(1, READ_BLOCK // hop)  # frames per read
            for first in range(0, len(offsets), group):
                count_here = len(offsets[first:first + group])
                total += _frame_power(source, int(offsets[first]), count_here, hop, window)
                used += count_here
            if used == 0:  # the last column(s), or a file shorter than one frame: the frame ending there
                total = _frame_power(source, max(0, min(start, frames - n_fft)), 1, hop, window)
                used = 1
            power[:, column] = total / used
        return 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10))), frames / rate, rate
    finally:
        source.close()


def spectrogram_png(named_paths: list[tuple[str, Path]], target: Path, workdir: Path) -> Path:
    """One picture, a row per (title, audio file), written atomically to ``target`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bsmamba2_plugin.atomic_file import atomic_path

    figure, axes = plt.subplots(len(named_paths), 1, figsize=(10, 2.1 * len(named_paths)), squeeze=False,
                                constrained_layout=True)
    image = None
    for axis, (title, path) in zip(axes[:, 0], named_paths):
        power_db, seconds, rate = spectrogram_columns(path, workdir)
        top = float(np.max(power_db))
        image = axis.imshow(power_db, origin="lower", aspect="auto", cmap="magma", vmin=top - TOP_DB, vmax=top,
                            extent=(0.0, seconds, 0.0, rate / 2000.0), interpolation="nearest")
        axis.set_title(title, fontsize=10, loc="left")
        axis.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    if image is not None:
        figure.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.9)
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)
    return target


@dataclass(frozen=True)
class StemLevels:
    stem: str
    level_where_reference_silent_db: float  # NaN when the reference is never silent
    overall_level_db: float


@dataclass(frozen=True)
class LevelReport:
    reference: str  # the stem whose silent regions are measured (vocals, or the first stem)
    silent_fraction: float
    stems: list[StemLevels]


def stem_levels(stems: dict[str, Path], reference: str, workdir: Path,
                silence_threshold_db: float = -60.0) -> LevelReport:
    """Each stem's level (dBFS) inside the 1 s frames where ``reference`` is silent, block by block.

    Blocks are whole 1 s frames, so ``silent_leakage``/``silent_fraction`` decide silence frame by
    frame as on the whole signal; their per-block results are merged back into energies. (A block
    whose leaked level is at the -120 dBFS floor counts as no energy: exact for digital silence, and
    otherwise at most 1e-12 per value too low, which only matters when the result lies near the floor.)
    """
    sources = {name: open_audio(path, workdir) for name, path in stems.items()}
    try:
        ref = sources[reference]
        rate, frames = ref.sample_rate, ref.frames
        block = max(1, READ_BLOCK // rate) * rate
        silent_energy = {name: 0.0 for name in stems}
        overall_energy = {name: 0.0 for name in stems}
        silent_values = 0
        values = 0
        for start in range(0, frames, block):
            stop = min(frames, start + block)
            reference_block = ref.read(start, stop)
            fraction = silent_fraction(reference_block, rate, silence_threshold_db=silence_threshold_db)
            silent_count = int(round(fraction * (stop - start))) * reference_block.shape[0]
            silent_values += silent_count
            values += reference_block.size
            for name, source in sources.items():
                stem_block = reference_block if name == reference else source.read(start, stop)
                overall_energy[name] += float(np.sum(np.square(stem_block, dtype=np.float64)))
                if silent_count:
                    leaked = silent_leakage(reference_block, stem_block, rate,
                                            silence_threshold_db=silence_threshold_db)
                    if leaked > LEAKAGE_FLOOR_DB:  # at the floor: at most 1e-12 per value, counted as 0
                        silent_energy[name] += 10.0 ** (leaked / 10.0) * silent_count
        return LevelReport(
            reference=reference,
            silent_fraction=silent_values / values if values else math.nan,
            stems=[StemLevels(name, _level_db(silent_energy[name], silent_values),
                              _level_db(overall_energy[name], values)) for name in stems],
        )
    finally:
        for source in sources.values():
            source.close()


def levels_markdown(report: LevelReport) -> str:
    def db(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.1f} dBFS"

    lines = [
        f"{report.reference} silent (1 s frames below -60 dBFS) in {100 * report.silent_fraction:.0f} % of the track.",
        "",
        f"| stem | level where {report.reference} is silent | overall level |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {s.stem} | {db(s.level_where_reference_silent_db)} | {db(s.overall_level_db)} |"
              for s in report.stems]
    if report.silent_fraction == 0:
        lines.append("")
        lines.append(f"({report.reference} is never silent here, so there is no silent region to measure.)")
    return "\n".join(lines)
