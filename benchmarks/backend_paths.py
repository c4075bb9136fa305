"""The paper model on mamba-ssm's kernels and on the PyTorch scan: same output, and a training step on each.

Issue 2's GPU checks in one command (needs CUDA and mamba-ssm; see README.md for installing it):

    python benchmarks/backend_paths.py [--config configs/bsmamba2_vocals_paper.yaml] [--seconds 8]

1. Agreement: one model, one set of random weights, `--seconds` of stereo noise; the forward on
   the mamba_ssm path and on the torch path, in bf16 autocast and in fp32. Prints the largest
   difference relative to the largest output and the SDR of one path's output against the other's
   (dB); bf16 passes at >= 30 dB (3 % rms difference: bf16 keeps 8 bits of mantissa, and the two
   paths round at different places: both take bf16 operands for the scan's products, but mamba-ssm
   keeps C.B in fp32 and cuts the sequence into chunks of 256 steps, the torch path 64).
2. Training step (forward, paper loss, backward, AdamW, EMA) of the config's batch and chunk
   (paper: 5 x 8 s, bf16) on each path: seconds per step and peak GPU memory.
Exit status 1 when the bf16 outputs disagree.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.model.backend import INSTALL_HINT, mamba_ssm_kernels

AGREEMENT_DB = 30.0
ROOT = Path(__file__).resolve().parents[1]


def compare_paths(model: BSMamba2, audio: torch.Tensor, dtype: torch.dtype | None) -> dict[str, float]:
    """Forward `audio` on both Mamba2 paths with the same weights (autocast to `dtype`, None: fp32)."""
    outputs = {}
    with torch.inference_mode(), torch.autocast(audio.device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        for backend in ("mamba_ssm", "torch"):
            model.set_backend(backend)
            outputs[backend] = model(audio).float()
    model.set_backend(None)
    kernels, scan = outputs["mamba_ssm"], outputs["torch"]
    difference = kernels - scan
    return {
        "max_relative": (difference.abs().max() / scan.abs().max()).item(),
        "sdr_db": 10 * math.log10(scan.square().sum().item() / max(difference.square().sum().item(), 1e-30)),
        "finite": float(bool(torch.isfinite(kernels).all() and torch.isfinite(scan).all())),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "bsmamba2_vocals_paper.yaml"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the agreement check's input")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per path")
    args = p.parse_args()
    # The sibling script (this folder is on sys.path), imported here: it tunes the allocator on import.
    from train_throughput import measure_training_step, read_config

    config = read_config(args.config)
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here; mamba-ssm's kernels run only on CUDA")
    if mamba_ssm_kernels() is None:
        raise SystemExit(f"mamba_ssm cannot be imported ({getattr(mamba_ssm_kernels, 'error', None)!r}); "
                         f"{INSTALL_HINT}")
    print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")

    torch.manual_seed(0)
    model = BSMamba2.from_config(config).to(device).eval()
    rate = int(config.audio.get("sample_rate", 44100))
    audio = torch.randn(1, model.audio_channels, int(args.seconds * rate), device=device) * 0.1
    agreed = True
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        result = compare_paths(model, audio, dtype)
        line = (f"{name} forward, mamba_ssm against torch: max |difference| {result['max_relative']:.1e} of"
                f" max |output|, SDR {result['sdr_db']:.1f} dB")
        if name == "bf16":
            ok = result["finite"] == 1.0 and result["sdr_db"] >= AGREEMENT_DB
            agreed = agreed and ok
            line += f" -> {'agree' if ok else 'DISAGREE'} (bf16 tolerance: >= {AGREEMENT_DB:g} dB)"
        print(line)
    del model

    batch = int(config.training.batch_size)
    chunk = int(config.audio.chunk_size)
    for backend in ("mamba_ssm", "torch"):
        step = measure_training_step(config, device, batch, steps=args.steps, backend=backend)
        torch.cuda.empty_cache()
        print(f"training step on {backend:9s} ({Path(args.config).name}, batch {batch} x {chunk / rate:g} s,"
              f" {'bf16 autocast' if step['amp'] else 'fp32'}): {step['seconds']:.3f} s per step,"
              f" peak GPU memory {step['peak_gib']:.1f} GiB")
    return 0 if agreed else 1


if __name__ == "__main__":
    raise SystemExit(main())
