"""``python -m bsmamba2_plugin.evaluate``: uSDR, cSDR and silent-region leakage over a track folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from bsmamba2_plugin.atomic_file import write_bytes_atomically
from bsmamba2_plugin.evaluate.report import csv_text, figure_png, msst_table
from bsmamba2_plugin.evaluate.run import evaluate_tracks
from bsmamba2_plugin.evaluate.scoring import summarize
from bsmamba2_plugin.evaluate.track_folders import find_tracks
from bsmamba2_plugin.metrics import METRIC_NAMES
from bsmamba2_plugin.separate.cli import add_engine_options, check_engine_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bsmamba2_plugin.evaluate",
        description="Evaluate BSMamba2 (or existing estimates) on MUSDB18HQ-style folders "
                    "(<valid_path>/<track>/mixture.wav + <stem>.wav): per-track and overall uSDR "
                    "(mean), cSDR (median of museval frame medians) and silent-region leakage.",
    )
    parser.add_argument("--valid_path", nargs="+", required=True, help="folder(s) of <track>/mixture.<ext>")
    parser.add_argument("--store_dir", required=True, help="where metrics.csv, summary.txt, metrics.png go")
    parser.add_argument("--config_path", help="MSST YAML of the model (needed unless --estimates_folder)")
    parser.add_argument("--start_check_point", default="", help="checkpoint for the model")
    parser.add_argument("--estimates_folder", help="evaluate files <folder>/<track>/<stem>.<ext> instead of a model")
    parser.add_argument("--instruments", nargs="+", help="stems to evaluate (default: the config's targets)")
    parser.add_argument("--extension", default="wav", help="audio extension of the track files (default wav)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, else MPS, else CPU, as MSST), cpu, cuda, cuda:N or mps")
    add_engine_options(parser)
    parser.add_argument("--duration", type=float, default=None,
                        help="separate N-second non-overlapping segments independently (the paper's "
                             "input-length study); the trailing remainder is not evaluated")
    parser.add_argument("--leakage_stem", default="vocals", help="stem whose silent-region leakage is plotted")
    parser.add_argument("--silence_threshold_db", type=float, default=-60.0,
                        help="a 1 s reference frame below this RMS (dBFS) counts as silent (default -60)")
    parser.add_argument("--metrics", nargs="+", default=[], choices=METRIC_NAMES,
                        help="MSST's metrics to add (uSDR as sdr, cSDR and leakage are always computed)")
    parser.add_argument("--no_figure", action="store_true", help="skip the PNG (no matplotlib needed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.config_path is None) == (args.estimates_folder is None):
        parser.error("give either --config_path (evaluate a model) or --estimates_folder (evaluate files)")
    check_engine_options(parser, args)
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration must be positive seconds, got {args.duration}")
    try:
        tracks = find_tracks([Path(p) for p in args.valid_path], args.extension)
        separator = None
        if args.config_path:
            from bsmamba2_plugin.separate import Separator
            from bsmamba2_plugin.separate.cli import describe_separator

            separator = Separator(args.config_path, args.start_check_point or None, device=args.device,
                                  precision=args.precision, use_tta=args.use_tta, bigshifts=args.bigshifts,
                                  weights=args.weights)
            describe_separator(separator)
    except Exception as error:  # noqa: BLE001 - setup errors end the run with one clear line
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Tracks: {len(tracks)}" + (f", segments of {args.duration:g} s" if args.duration else ""),
          file=sys.stderr)
    bar = tqdm(total=len(tracks), desc="Tracks", unit="track")
    samples = tqdm(total=1, desc="separating", unit="sample", unit_scale=True, leave=False,
                   disable=separator is None)

    started = [0]

    def on_track(track) -> None:
        bar.n = started[0]
        bar.set_postfix_str(track.name[:30])
        started[0] += 1

    def progress(done: int, total: int) -> None:  # model-rate samples over every pass
        if samples.total != total:
            samples.reset(total=total)
        samples.n = done
        samples.refresh()

    try:
        evaluation = evaluate_tracks(
            tracks, separator=separator,
            estimates_folder=Path(args.estimates_folder) if args.estimates_folder else None,
            stems=args.instruments, duration=args.duration, silence_threshold_db=args.silence_threshold_db,
            on_track=on_track, progress=progress, metrics=args.metrics,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    samples.close()
    bar.n = len(tracks)
    bar.close()
    store = Path(args.store_dir)
    scores = evaluation.scores
    summaries = summarize(scores)
    write_bytes_atomically(store / "metrics.csv", csv_text(scores).encode())
    table = msst_table(summaries)
    write_bytes_atomically(store / "summary.txt", table.encode())
    print(table)
    if scores and not args.no_figure:
        stems = [s.stem for s in summaries]
        leakage_stem = args.leakage_stem if args.leakage_stem in stems else stems[0]
        title = f"{len({s.track for s in scores})} track(s)" + (
            f", {args.duration:g} s segments" if args.duration else "")
        try:
            write_bytes_atomically(store / "metrics.png", figure_png(scores, summaries, leakage_stem, title))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(f"Wrote {store / 'metrics.csv'}, {store / 'summary.txt'}"
          + ("" if args.no_figure or not scores else f", {store / 'metrics.png'}"), file=sys.stderr)
    if evaluation.failed:
        print(f"{len(evaluation.failed)} track(s) failed:", file=sys.stderr)
        for name, reason in evaluation.failed.items():
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0
