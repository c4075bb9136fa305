"""Writing evaluation results: a CSV per (track, stem), an MSST-style table, a PNG figure."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from bsmamba2_plugin.evaluate.scoring import StemScore, StemSummary


def csv_text(scores: list[StemScore]) -> str:
    buffer = io.StringIO()
    fields = list(scores[0].as_row()) if scores else ["track", "stem"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for score in scores:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in score.as_row().items()})
    return buffer.getvalue()


def msst_table(summaries: list[StemSummary]) -> str:
    """MSST valid.py's lines ("Instr vocals sdr: 7.1234 (Std: 1.2345)", "Metric avg sdr: ...") plus
    the cSDR and leakage figures, then a Markdown table of the same numbers."""
    lines = []
    for s in summaries:
        lines.append(f"Instr {s.stem} sdr: {s.usdr_mean:.4f} (Std: {s.usdr_std:.4f})")
        lines.append(f"Instr {s.stem} csdr (median of track medians): {s.csdr_median:.4f}")
        leak = "n/a (no silent regions)" if math.isnan(s.leakage_mean) else f"{s.leakage_mean:.2f} dBFS"
        lines.append(f"Instr {s.stem} silent-region leakage: {leak} over {s.leakage_tracks} track(s)")
    if summaries:
        avg = sum(s.usdr_mean for s in summaries) / len(summaries)
        lines.append(f"Metric avg {'sdr':11s}: {avg:.4f}")
    lines += ["", "| stem | tracks | uSDR mean (dB) | uSDR std | cSDR median (dB) | leakage (dBFS) |",
              "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.stem} | {s.tracks} | {s.usdr_mean:.3f} | {s.usdr_std:.3f} | {s.csdr_median:.3f} | "
                     f"{s.leakage_mean:.2f} |")
    return "\n".join(lines) + "\n"


def figure_png(scores: list[StemScore], summaries: list[StemSummary], leakage_stem: str, title: str) -> bytes:
    """Per-track SDR (uSDR filled, cSDR hollow, one colour per stem) and the leakage stem's
    silent-region level per track, tracks sorted by the leakage stem's uSDR."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("the PNG figure needs matplotlib (pip install matplotlib), or pass --no_figure") from error

    tracks = list(dict.fromkeys(s.track for s in scores))
    key = {s.track: s.usdr_db for s in scores if s.stem == leakage_stem}
    tracks.sort(key=lambda t: key.get(t, math.nan) if not math.isnan(key.get(t, math.nan)) else -1e9)
    stems = [s.stem for s in summaries]
    height = max(3.0, 0.28 * len(tracks) + 1.6)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    positions = {t: i for i, t in enumerate(tracks)}
    for k, stem in enumerate(stems):
        colour = colours[k % len(colours)]
        rows = [s for s in scores if s.stem == stem]
        y = [positions[s.track] + (k - (len(stems) - 1) / 2) * 0.12 for s in rows]
        left.scatter([s.usdr_db for s in rows], y, color=colour, s=22, label=f"{stem} uSDR")
        left.scatter([s.csdr_db for s in rows], y, facecolors="none", edgecolors=colour, s=22,
                     label=f"{stem} cSDR")
        summary = next(s for s in summaries if s.stem == stem)
        left.axvline(summary.usdr_mean, color=colour, lw=0.8, ls="--")
    left.set_yticks(range(len(tracks)), [t[:38] for t in tracks], fontsize=7)
    left.set_xlabel("SDR (dB), higher is better; dashed: mean uSDR")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=7, loc="best", ncols=max(1, len(stems)), framealpha=0.6)
    left.set_title("Per-track SDR")

    leak_rows = {s.track: s for s in scores if s.stem == leakage_stem}
    values = [leak_rows[t].leakage_dbfs if t in leak_rows else math.nan for t in tracks]
    floor = min([v for v in values if not math.isnan(v)], default=-120.0) - 5
    bars = [v - floor if not math.isnan(v) else 0 for v in values]
    right.barh(range(len(tracks)), bars, left=floor, color=colours[0], alpha=0.7)
    for i, (t, v) in enumerate(zip(tracks, values)):
        label = "no silent part" if math.isnan(v) else f"{v:.1f} dBFS ({leak_rows[t].silent_fraction:.0%} silent)"
        right.text(floor if math.isnan(v) else v, i, " " + label, va="center", fontsize=6)
    right.set_xlabel(f"{leakage_stem} estimate level where the reference is silent (dBFS), lower is better")
    right.set_title(f"Leakage into {leakage_stem}-silent regions")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    plt.close(fig)
    return buffer.getvalue()
