"""Speed of the paper model's forward pass on this machine (a benchmark, not a test).

Prints, for BSMamba2 (paper configuration) on N seconds of stereo 44.1 kHz audio:
- the machine, torch version and thread count;
- fp32 matmul GFLOP/s measured in the same run (4096 x 4096 products, through the library the
  projections use);
- analytic forward FLOPs: 2 x multiply-adds of every matrix product of the forward
  (projections, band split and mask MLPs at the real sequence lengths; the SSD products as the
  chunked algorithm needs them, at its chunk lengths); elementwise work is not counted;
- forward wall time, achieved GFLOP/s and its share of the matmul rate (target >= 40 %);
- peak resident memory during the forward;
- the same forward under bf16 autocast in the same run, the two in turn (one forward of each per
  round, `timing.in_turn`): its time, the ratio to fp32 (the median of the rounds' ratios; target
  on a CPU with native bf16: >= 2x), the SDR of its output against the fp32 output (target
  >= 35 dB), and what `--precision auto` picks on this machine and why;
- which library multiplies the fp32 projections here (model/projection.py) and, with
  --compare_cpu_gemm, the fp32 forward with the other one, in turn with the rest, and the ratio;
- the chunked SSD scan against the sequential recurrence at L = 801 (target >= 50x), with the
  bound the matmul rate puts on that ratio (both forms do about the same arithmetic).

    python benchmarks/model_speed.py [--seconds 8] [--threads N] [--rounds 3] [--compare_cpu_gemm]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # before torch allocates anything

import torch  # noqa: E402

from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.model.projection import cpu_gemm, project, using_cpu_gemm  # noqa: E402
from bsmamba2_plugin.model.ssd import padded_length, ssd_chunked, ssd_sequential  # noqa: E402
from bsmamba2_plugin.precision import Precision, autocast, resolve_precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_rounds_argument, cpu_name, in_turn  # noqa: E402


def matmul_gflops(size: int = 4096, repeats: int = 3) -> float:
    """fp32 GFLOP/s of a (size x size) product through the library the model's projections use."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.inference_mode():
        project(a, b)
        start = time.perf_counter()
        for _ in range(repeats):
            project(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def ssd_flops(sequences: int, padded: int, chunk: int, n: int, h: int, p: int) -> dict[str, float]:
    """Matrix-product FLOPs of `ssd_chunked` on `sequences` sequences of `padded` steps (h heads of p,
    d_state n, one group): inside the chunks C B^T (shared by the heads) and scores @ x; between
    them the states out of every chunk but the last and into every chunk but the first."""
    q = min(padded, chunk)
    return {"ssd_intra_chunk": 2 * sequences * padded * q * (n + h * p),
            "ssd_states": 4 * sequences * (padded - q) * n * h * p}


def forward_flops(model: BSMamba2, samples: int) -> dict[str, float]:
    """Matrix-product FLOPs of one forward on (1, channels, samples), by component."""
    hop = model.stft_kwargs["hop_length"]
    frames = samples // hop + 1
    band_inputs = model.band_split.dim_inputs
    bands, dim = len(band_inputs), model.band_split.to_features[0][1].out_features
    mixer = model.layers[0][0].forward_blocks[0].mixer
    d_in_proj = mixer.in_proj.out_features
    n, h, p, d_inner = mixer.d_state, mixer.nheads, mixer.headdim, mixer.d_inner

    def bidirectional(sequences: int, length: int) -> dict[str, float]:
        tokens = 2 * sequences * length  # two directions
        padded = padded_length(length, mixer.torch_chunk_size)  # the scan's own work is on padded chunks
        return {
            "projections": 2 * tokens * dim * (d_in_proj + d_inner) + 2 * (tokens // 2) * 2 * dim * dim,
            **ssd_flops(2 * sequences, padded, mixer.torch_chunk_size, n, h, p),
        }

    total: dict[str, float] = {}
    for sequences, length in ((bands, frames), (frames, bands)):  # time modules, band modules
        for key, value in bidirectional(sequences, length).items():
            total[key] = total.get(key, 0) + value * len(model.layers)
    total["band_split"] = 2 * frames * sum(band_inputs) * dim
    hidden = model.mask_estimators[0].to_freqs[0][0][0].out_features
    total["mask_estimators"] = model.num_stems * 2 * frames * (bands * dim * hidden + hidden * 2 * sum(band_inputs))
    return total


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    add_rounds_argument(parser, 3, "one fp32 and one bf16 forward")
    parser.add_argument("--compare_cpu_gemm", action="store_true",
                        help="also time, in turn, the fp32 forward with the other CPU GEMM library than the one"
                             " BSMAMBA2_CPU_GEMM picks here (oneDNN or torch's own, MKL)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; {args.threads} threads")
    model = BSMamba2().eval()
    samples = int(args.seconds * 44100)
    audio = torch.randn(1, 2, samples) * 0.1
    flops = forward_flops(model, samples)
    total = sum(flops.values())
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; input: {args.seconds:g} s stereo")
    for key, value in flops.items():
        print(f"  {key:16s} {value / 1e9:8.1f} GFLOP")
    print(f"  {'total':16s} {total / 1e9:8.1f} GFLOP")

    bf16 = Precision("bf16", torch.bfloat16, "benchmark")

    def bf16_forward() -> torch.Tensor:
        with autocast(bf16, "cpu"):
            return model(audio)

    with torch.inference_mode():
        rss_before = peak_rss_mib()
        # Warm-up at full length: the first 8 s forward also pays for first-touch memory (measured
        # 23.3 s against 18.5 s on a 2-core Xeon), which a separation of many chunks pays once.
        model(audio)
        rss_after = peak_rss_mib()
        bf16_forward()
        variants = {"fp32": lambda: model(audio), "bf16": bf16_forward}
        chosen_gemm, gemm_reason = cpu_gemm()
        other_gemm = "mkl" if chosen_gemm == "onednn" else "onednn"
        if args.compare_cpu_gemm:
            def other_fp32_forward() -> torch.Tensor:
                with using_cpu_gemm(other_gemm):
                    return model(audio)

            other_fp32_forward()  # its own warm-up
            variants["fp32 other"] = other_fp32_forward
        timings = in_turn(variants, rounds=args.rounds, warmup=0)
    fp32_out, bf16_out = timings.outputs["fp32"], timings.outputs["bf16"]
    matmul = matmul_gflops()
    seconds = timings.best("fp32")
    achieved = total / seconds / 1e9
    print(f"forward: {seconds:.2f} s (best of {args.rounds} after a warm-up: {timings.listed('fp32')}),"
          f" real-time factor {seconds / args.seconds:.2f}")
    print(f"achieved {achieved:.1f} GFLOP/s; fp32 matmul {matmul:.1f} GFLOP/s -> {100 * achieved / matmul:.0f} %"
          " of the matmul rate (target >= 40 %)")
    print(f"peak RSS: {rss_after:.0f} MiB after the fp32 warm-up (before the first forward: {rss_before:.0f} MiB)")
    sdr = 10 * torch.log10(fp32_out.pow(2).sum() / (fp32_out - bf16_out).pow(2).sum()).item()
    speedups = timings.ratios("fp32", "bf16")
    print(f"bf16 autocast forward: {timings.listed('bf16')} s, in turn with fp32's -> per round "
          f"{', '.join(f'{r:.2f}x' for r in speedups)}, median {timings.median_ratio('fp32', 'bf16'):.2f}x the fp32"
          f" speed (target >= 2x where bf16 is native); output {sdr:.1f} dB SDR from fp32 (target >= 35 dB)")
    print(f"--precision auto here: {resolve_precision('auto', 'cpu').reason}")
    print(f"fp32 projections here: {gemm_reason}")
    if args.compare_cpu_gemm:
        other_out = timings.outputs["fp32 other"]
        difference = ((other_out - fp32_out).abs().max() / fp32_out.abs().max()).item()
        print(f"fp32 forward with {other_gemm} instead: {timings.listed('fp32 other')} s, in turn -> per round "
              f"{', '.join(f'{r:.2f}x' for r in timings.ratios('fp32 other', 'fp32'))}, median"
              f" {timings.median_ratio('fp32 other', 'fp32'):.2f}x the time of {chosen_gemm}'s;"
              f" max relative difference {difference:.1e}")

    # One Mamba2 layer's scan over time on an 8 s clip: 62 band sequences, 16 heads x 64, d_state 128.
    length, heads, headdim, d_state, sequences, chunk = 801, 16, 64, 128, 62, 64
    x = torch.randn(sequences, length, heads, headdim) * 0.05
    a = -torch.rand(sequences, length, heads) * 0.1
    B, C = torch.randn(sequences, length, 1, d_state), torch.randn(sequences, length, 1, d_state)
    with torch.inference_mode():
        scans = in_turn({"chunked": lambda: ssd_chunked(x, a, B, C, chunk)}, rounds=3)  # best of 3 after a warm-up
        start = time.perf_counter()  # the sequential loop takes seconds: once
        sequential = ssd_sequential(x, a, B, C)
        t_sequential = time.perf_counter() - start
    chunked, t_chunked = scans.outputs["chunked"], scans.best("chunked")
    error = ((chunked - sequential).abs().max() / sequential.abs().max()).item()
    # Both forms do about the same arithmetic: per step and head the recurrence decays the state,
    # adds B x^T and reads C^T h (5 n p); the chunked form's products cost 4 n p for the states in
    # and out of the chunks plus 2 Q (n / heads + p) inside them. So its advantage over the loop is
    # bounded by how far the loop falls short of the matmul rate.
    scan_flops = ssd_flops(sequences, padded_length(length, chunk), chunk, d_state, heads, headdim)
    state_flops = scan_flops["ssd_states"]  # about the same for any chunk size
    chunked_flops = sum(scan_flops.values())
    sequential_flops = 5 * sequences * length * heads * d_state * headdim
    print(f"SSD scan at L={length} ({sequences} sequences x {heads} heads, d_state {d_state}, chunk {chunk}):"
          f" chunked {t_chunked * 1e3:.0f} ms ({chunked_flops / 1e9:.1f} GFLOP, {chunked_flops / t_chunked / 1e9:.0f}"
          f" GFLOP/s), sequential {t_sequential * 1e3:.0f} ms ({sequential_flops / 1e9:.1f} GFLOP,"
          f" {sequential_flops / t_sequential / 1e9:.1f} GFLOP/s) -> {t_sequential / t_chunked:.0f}x faster"
          f" (target >= 50x); max relative difference {error:.1e}")
    bound = chunked_flops / (matmul * 1e9)
    floor = state_flops / (matmul * 1e9)
    print(f"  at the matmul rate the chunked scan's products need {bound * 1e3:.0f} ms (those of the states"
          f" alone, whatever the chunk size, {floor * 1e3:.0f} ms): against this sequential run a chunked scan"
          f" in fp32 can be at most {t_sequential / bound:.0f}x ({t_sequential / floor:.0f}x) faster on this machine")


if __name__ == "__main__":
    main()
