"""``python -m bsmamba2_plugin.separate``: MSST inference.py's command line for BSMamba2."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bsmamba2_plugin.separate.output_naming import DEFAULT_TEMPLATE, OutputFormat, check_template

UNSUPPORTED = {  # MSST flags this command does not implement, refused rather than ignored
    "lora_checkpoint_peft": "",
    "lora_checkpoint_loralib": "",
}


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The separation engine's options, the same on every command that separates."""
    parser.add_argument("--use_tta", action="store_true",
                        help="MSST's test-time augmentation: also separate the channel-swapped and the "
                             "polarity-inverted mixture, undo each and average the three (3x the time)")
    parser.add_argument("--bigshifts", type=int, default=1,
                        help="MSST's bigshifts: average N passes over the mixture circularly shifted by "
                             "k*length/N samples (N times the time; default 1: off)")
    parser.add_argument("--weights", choices=["auto", "raw", "ema"], default="auto",
                        help="for a checkpoint holding both: the trained (raw) or the EMA weights "
                             "(default auto: what the checkpoint's own tools load)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="auto: bf16 where the device multiplies it natively, else fp32 "
                             "(default: inference.precision in the YAML, else auto)")


def check_engine_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.bigshifts < 1:
        parser.error(f"--bigshifts must be 1 or more, got {args.bigshifts}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bsmamba2_plugin.separate",
        description="Separate audio files with BSMamba2 (flags and output names as MSST's inference.py).",
    )
    parser.add_argument("--model_type", default="bsmamba2", help="only used in --filename_template {model_type}")
    parser.add_argument("--config_path", required=True, help="MSST YAML config of the BSMamba2 model")
    parser.add_argument("--start_check_point", default="",
                        help="checkpoint (.ckpt/.pt/.pth/.safetensors; MSST, plain or Lightning layout)")
    parser.add_argument("--input_folder", required=True, help="a folder (searched recursively) or one audio file")
    parser.add_argument("--store_dir", required=True, help="folder for the separated stems")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, else MPS, else CPU, as MSST), cpu, cuda, cuda:N or mps")
    parser.add_argument("--device_ids", nargs="+", type=int, default=None,
                        help="MSST compatibility: the first id selects cuda:N")
    parser.add_argument("--force_cpu", action="store_true", help="same as --device cpu")
    parser.add_argument("--extract_instrumental", action="store_true",
                        help="also write mixture minus vocals (or minus the first stem) as 'instrumental'")
    parser.add_argument("--disable_detailed_pbar", action="store_true", help="no per-file progress bar")
    parser.add_argument("--flac_file", action="store_true", help="write FLAC instead of WAV")
    parser.add_argument("--pcm_type", choices=["PCM_16", "PCM_24", "FLOAT"], default=None,
                        help="sample format (default: FLOAT for WAV, PCM_24 for FLAC)")
    parser.add_argument("--filename_template", default=DEFAULT_TEMPLATE,
                        help="output name without extension; fields {relative_path} {file_name} {dir_name} "
                             "{instr} {extension} {model_type} {model} {start_time}; '/' makes folders. "
                             "'{file_name}_{instr}' gives the older MSST names")
    parser.add_argument("--downmix", action="store_true",
                        help="average inputs with more than two channels into mono instead of refusing them")
    add_engine_options(parser)
    parser.add_argument("--draw_spectro", type=float, default=0,
                        help="write a spectrogram picture <stem>.jpg of the first SECONDS of each stem")
    parser.add_argument("--lora_checkpoint_peft", default="", help=argparse.SUPPRESS)
    parser.add_argument("--lora_checkpoint_loralib", default="", help=argparse.SUPPRESS)
    return parser


def describe_separator(separator, files: int | None = None) -> None:
    """The start-up lines every separating command prints: weights, device, precision, passes."""
    weights = getattr(separator.model, "loaded_weights", None)
    if weights is not None:
        print(weights, file=sys.stderr)  # "weights: <file> (<layout>; raw or EMA), <N> parameters"
    settings = separator.settings
    passes = []
    if settings.use_tta:
        passes.append("TTA (plain, channel-swapped, polarity-inverted)")
    if settings.bigshifts > 1:
        passes.append(f"bigshifts {settings.bigshifts}")
    from bsmamba2_plugin.model.projection import cpu_gemm  # imported here: `--help` needs no torch

    precision = separator.precision.reason
    if separator.device.type == "cpu" and separator.precision.dtype is None:
        precision += f", its products through {cpu_gemm()[1]}"
    print(f"Device: {separator.device}. Precision: {precision}. "
          f"Instruments: {', '.join(separator.instruments)}. Model sample rate: {separator.sample_rate}. "
          f"Chunk {settings.chunk_size}, overlap {settings.num_overlap}, batch {settings.batch_size}. "
          f"Passes per file: {settings.passes}" + (f" ({', '.join(passes)})" if passes else "") + "."
          + (f" Files found: {files}." if files is not None else ""), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_engine_options(parser, args)
    if args.draw_spectro < 0:
        parser.error(f"--draw_spectro must be 0 (off) or a number of seconds, got {args.draw_spectro:g}")
    for name, default in UNSUPPORTED.items():
        if getattr(args, name) != default:
            parser.error(f"--{name} is an MSST option that bsmamba2_plugin.separate does not support: a LoRA "
                         f"checkpoint of python -m bsmamba2_plugin.train holds merged weights and loads without it")
    output_format = OutputFormat(flac=args.flac_file, pcm_type=args.pcm_type)
    device = args.device
    if args.force_cpu:
        device = "cpu"
    elif args.device_ids and device in ("auto", "cuda"):
        device = f"cuda:{args.device_ids[0]}"

    from bsmamba2_plugin.separate.separator import Separator, list_inputs

    started = time.time()
    try:
        output_format.subtype  # noqa: B018 - validates the format before the model loads
        check_template(args.filename_template)
        inputs = list_inputs(Path(args.input_folder))
        if not inputs:
            raise ValueError(f"--input_folder {args.input_folder} holds no files to separate")
        separator = Separator(args.config_path, args.start_check_point or None, device=device,
                              precision=args.precision, use_tta=args.use_tta, bigshifts=args.bigshifts,
                              weights=args.weights)
    except Exception as error:  # noqa: BLE001 - setup errors end the run with one clear line
        print(f"error: {error}", file=sys.stderr)
        return 2
    describe_separator(separator, len(inputs))

    folder_bar = tqdm(total=len(inputs), desc="Total progress", unit="file")
    bars: list[tqdm] = []

    started_files = [0]

    def on_file(path: Path):
        for bar in bars:
            bar.close()
        bars.clear()
        folder_bar.n = started_files[0]
        folder_bar.refresh()
        started_files[0] += 1
        if args.disable_detailed_pbar:
            return None
        bar = tqdm(total=1, desc=path.name[:40], unit="sample", unit_scale=True, leave=False)
        bars.append(bar)

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()
        return progress

    report = separator.separate_folder(
        args.input_folder, args.store_dir, on_file=on_file,
        filename_template=args.filename_template, output_format=output_format,
        extract_instrumental=args.extract_instrumental, downmix=args.downmix, model_type=args.model_type,
        draw_spectro=args.draw_spectro,
    )
    for bar in bars:
        bar.close()
    folder_bar.n = len(inputs)
    folder_bar.close()
    for path, stems in report.written.items():
        print(f"{path}: " + ", ".join(str(p) for p in stems.values()))
    print(f"Separated {len(report.written)} of {len(inputs)} file(s) in {time.time() - started:.1f} s.",
          file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} file(s) failed:", file=sys.stderr)
        for path, reason in report.failed.items():
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
