"""Side by side with the models users would pick instead: MSST's vocals configs against ours (a benchmark).

One run, one process, the same random input and thread count for every model, random weights.
MSST's models are built by MSST's own factory (`utils.settings.get_model_from_config`) from its
own YAMLs in the checkout given by --msst_checkout:

    configs/config_vocals_bs_roformer.yaml, config_vocals_mel_band_roformer.yaml,
    config_vocals_mdx23c.yaml, config_vocals_scnet.yaml

and ours from configs/bsmamba2_vocals_paper.yaml in fp32 and with `--precision auto`. All models are
built first, then run in turn, one forward of each per round (`timing.in_turn`), so that the host's
drift in speed during the run reaches every model alike; each row takes its model's best. Per model it
prints the parameters, the matrix-product FLOPs per second of audio and per song (counted by
torch's FlopCounterMode on one forward at the model's chunk: what explains the gaps on a CPU
without native bf16), the seconds per 8 s of stereo audio (one forward at the model's own chunk
size, scaled to 8 s) and the projected wall time for a 3-minute song with that config's own
inference settings (chunk size, num_overlap; MSST's demix runs ceil((song + 2 border) / step)
chunks with step = chunk // num_overlap, border = chunk - step). MSST's own bs_mamba2 imports
mamba_ssm, which needs CUDA: on a CPU its row says so instead of a figure.

    git clone https://github.com/ZFTurbo/Music-Source-Separation-Training /tmp/msst
    python benchmarks/peers.py --msst_checkout /tmp/msst [--threads N] [--rounds 2] [--device cpu|cuda]

MSST's models need its requirements (einops, rotary-embedding-torch, beartype, omegaconf, ...);
install them with torch pinned (`pip install -c <(echo torch==2.13.0) ...`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # before torch allocates anything

import torch  # noqa: E402

from bsmamba2_plugin.config import load_config  # noqa: E402
from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.precision import Precision, autocast, resolve_precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_rounds_argument, cpu_name, in_turn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
MSST_CONFIGS = (  # (model_type, YAML under the checkout's configs/)
    ("bs_roformer", "config_vocals_bs_roformer.yaml"),
    ("mel_band_roformer", "config_vocals_mel_band_roformer.yaml"),
    ("mdx23c", "config_vocals_mdx23c.yaml"),
    ("scnet", "config_vocals_scnet.yaml"),
)
MSST_BS_MAMBA2 = ("bs_mamba2", "config_bs_mamba2_vocals.yaml")
OURS = ROOT / "configs" / "bsmamba2_vocals_paper.yaml"


def inference_settings(config: Any) -> tuple[int, int]:
    """(chunk samples, num_overlap) as MSST's demix reads them."""
    inference = config.inference
    chunk = int(inference.chunk_size) if "chunk_size" in inference else int(config.audio.chunk_size)
    return chunk, int(inference.num_overlap)


def demix_chunks(song_samples: int, chunk: int, num_overlap: int) -> int:
    """How many chunks MSST's demix runs on a song (reflect padding of `border` on both sides)."""
    step = chunk // num_overlap
    border = chunk - step
    padded = song_samples + 2 * border if song_samples > 2 * border and border > 0 else song_samples
    return math.ceil(padded / step)


def forward(model: torch.nn.Module, audio: torch.Tensor, precision: Precision | None = None) -> Callable[[], None]:
    """One forward on `audio` as a callable for `in_turn`, finished on the device when it returns."""
    device = audio.device

    def run() -> None:
        with torch.inference_mode(), autocast(precision or Precision("fp32", None, ""), device):
            model(audio)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def count_flops(model: torch.nn.Module, audio: torch.Tensor) -> int:
    """Matrix-product and convolution FLOPs (2 x multiply-adds) of one forward, as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    from bsmamba2_plugin.model.projection import using_cpu_gemm

    # torch's own products: FlopCounterMode does not count oneDNN's linear, which our float32
    # projections take on an AMD CPU (model/projection.py); the products are the same.
    with torch.inference_mode(), FlopCounterMode(display=False) as counter, using_cpu_gemm("mkl"):
        model(audio)
    return counter.get_total_flops()


def msst_factory(checkout: Path):
    """MSST's own get_model_from_config, imported from the checkout."""
    if not (checkout / "utils" / "settings.py").is_file():
        raise SystemExit(f"peers.py: --msst_checkout {checkout} has no utils/settings.py (not an MSST checkout)")
    sys.path.insert(0, str(checkout))
    from utils.settings import get_model_from_config

    return get_model_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msst_checkout", required=True, type=Path, help="a checkout of ZFTurbo's MSST")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    add_rounds_argument(parser, 2, "one forward of each model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--song_seconds", type=float, default=180.0)
    parser.add_argument("--only", nargs="*", default=None, help="model types to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    get_model_from_config = msst_factory(args.msst_checkout.resolve())
    song = int(args.song_seconds * SAMPLE_RATE)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; {args.threads} threads; "
          f"device {device}; {time.strftime('%Y-%m-%d')}; random weights; the models in turn, best of "
          f"{args.rounds} rounds after {args.warmup} warm-up")
    generator = torch.Generator().manual_seed(0)
    longest = 485100  # the largest chunk below (SCNet's 11 s); every model reads a prefix of one input
    audio = (torch.randn(1, 2, longest, generator=generator) * 0.1).to(device)
    models = []  # (name, parameters, chunk, num_overlap, forward or None, note, flops)

    def add_model(name: str, parameters: int, chunk: int, num_overlap: int, run, note: str = "",
                  flops: int | None = None) -> None:
        models.append((name, parameters, chunk, num_overlap, run, note, flops))
        print(f"  built {name}{': ' + note if note else ''}", flush=True)

    os.chdir(args.msst_checkout)  # MSST resolves some paths relative to its root
    for model_type, yaml_name in MSST_CONFIGS:
        if args.only and model_type not in args.only:
            continue
        model, config = get_model_from_config(model_type, str(args.msst_checkout / "configs" / yaml_name))
        model = model.to(device).eval()
        chunk, overlap = inference_settings(config)
        batch = audio[..., :chunk] if chunk <= longest else torch.randn(1, 2, chunk, device=device) * 0.1
        add_model(f"MSST {model_type}", sum(p.numel() for p in model.parameters()), chunk, overlap,
                  forward(model, batch), flops=count_flops(model, batch))

    if not args.only or "bs_mamba2" in args.only:
        model_type, yaml_name = MSST_BS_MAMBA2
        if device.type != "cuda":
            config = load_config(str(args.msst_checkout / "configs" / yaml_name))
            chunk, overlap = inference_settings(config)
            add_model(f"MSST {model_type}", 0, chunk, overlap, None, "cannot run without CUDA (imports mamba_ssm)")
        else:
            model, config = get_model_from_config(model_type, str(args.msst_checkout / "configs" / yaml_name))
            model = model.to(device).eval()
            chunk, overlap = inference_settings(config)
            add_model(f"MSST {model_type}", sum(p.numel() for p in model.parameters()), chunk, overlap,
                      forward(model, audio[..., :chunk]), flops=count_flops(model, audio[..., :chunk]))

    if not args.only or "bsmamba2" in args.only:
        config = load_config(str(OURS))
        model = BSMamba2.from_config(config).to(device).eval()
        chunk, overlap = inference_settings(config)
        parameters = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, audio[..., :chunk])  # the same products in either precision
        add_model("ours bsmamba2 fp32", parameters, chunk, overlap, forward(model, audio[..., :chunk]), flops=flops)
        auto = resolve_precision("auto", device, bool(config.training.get("use_amp", True)))
        add_model(f"ours bsmamba2 auto = {auto.reason}", parameters, chunk, overlap,
                  forward(model, audio[..., :chunk], auto), flops=flops)

    timings = in_turn({name: run for name, _, _, _, run, _, _ in models if run is not None},
                      rounds=args.rounds, warmup=args.warmup)
    rows = []
    for name, parameters, chunk, num_overlap, run, note, flops in models:
        seconds = None if run is None else timings.best(name)
        if run is not None:
            print(f"  {name}: {timings.listed(name)} s per chunk", flush=True)
        per_8s = None if seconds is None else seconds * 8 * SAMPLE_RATE / chunk
        song_s = None if seconds is None else seconds * demix_chunks(song, chunk, num_overlap)
        per_second = None if flops is None else flops * SAMPLE_RATE / chunk
        song_flops = None if flops is None else flops * demix_chunks(song, chunk, num_overlap)
        rows.append((name, parameters, chunk, num_overlap, per_second, song_flops, per_8s, song_s, note))

    print(f"\n| model | parameters | chunk (samples) | num_overlap | GFLOP per s of audio | TFLOP per song | "
          f"s per 8 s of stereo | {args.song_seconds / 60:g}-min song (min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, parameters, chunk, overlap, per_second, song_flops, per_8s, song_s, note in rows:
        per = "-" if per_8s is None else f"{per_8s:.1f}"
        minutes = "-" if song_s is None else f"{song_s / 60:.1f}"
        params = "-" if not parameters else f"{parameters / 1e6:.1f} M"
        gflops = "-" if per_second is None else f"{per_second / 1e9:.0f}"
        tflops = "-" if song_flops is None else f"{song_flops / 1e12:.1f}"
        label = f"{name}: {note}" if note else name
        print(f"| {label} | {params} | {chunk} | {overlap} | {gflops} | {tflops} | {per} | {minutes} |")


if __name__ == "__main__":
    main()
