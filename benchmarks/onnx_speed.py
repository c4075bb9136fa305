"""ONNX export of the paper model and onnxruntime against PyTorch fp32 on one chunk (a benchmark, not a test).

Prints the export's wall time and graph size, then seconds per chunk for onnxruntime (CPU) and
for the PyTorch model in fp32 on the same chunk, in the same run, and their relative difference.
The two runtimes run in turn, one chunk each per round (`timing.in_turn`): the ratio reported is
the median of the rounds' ratios. Random weights; the paper configuration (or --config).

    python benchmarks/onnx_speed.py [--chunk_size 352800] [--threads N] [--rounds 4] [--config PATH]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

# As the package's commands do, for both runtimes: without this glibc hands every large
# intermediate back to the kernel and the next op faults it in again (PyTorch's, and onnxruntime's
# with its arena off: there 6.1 s -> 3.8 s per 2 s chunk, depth-1 model).
tune_cpu_allocator()

import torch  # noqa: E402

from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.onnx_export import OnnxChunkModel, export_onnx, frames_for, samples_argument  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_rounds_argument, cpu_name, in_turn  # noqa: E402
from train_throughput import read_config  # noqa: E402


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--chunk_size and --config, as both ONNX benchmarks take them."""
    parser.add_argument("--chunk_size", type=samples_argument, default=352800, help="samples per chunk (paper: 8 s)")
    parser.add_argument("--config", default=None, help="an MSST YAML; default: the paper model")


def benchmark_model(args: argparse.Namespace, onnx_threads: str) -> tuple[BSMamba2, torch.Tensor]:
    """The model (random weights, seed 0; the paper's or --config's) and the chunk of random audio both
    ONNX benchmarks run; prints the machine and the model."""
    torch.manual_seed(0)
    model = (BSMamba2.from_config(read_config(args.config)) if args.config else BSMamba2()).eval()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; onnxruntime {onnx_threads}")
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; chunk {args.chunk_size} samples "
          f"({frames_for(model.stft_kwargs, args.chunk_size)} frames)")
    return model, torch.randn(1, model.audio_channels, args.chunk_size) * 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of both runtimes (default: each its own choice, as the package leaves them: "
                             "torch's, and onnxruntime's one per physical core, pinned to it)")
    add_rounds_argument(parser, 4, "one chunk in each runtime")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, audio = benchmark_model(args, f"{args.threads} threads" if args.threads
                                   else "its own choice of threads (one per physical core, pinned)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bsmamba2.onnx"
        start = time.perf_counter()
        export_onnx(model, path, chunk_samples=args.chunk_size)
        export_seconds = time.perf_counter() - start
        import onnx

        nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
        print(f"export: {export_seconds:.1f} s, {nodes} graph nodes, {path.stat().st_size / 2**20:.0f} MiB")
        # The package's session options. An explicit thread count turns off onnxruntime's pinning of its
        # threads to cores: 19.9 s against 18.5 s per 8 s chunk with 2 threads on 2 cores (2026-12-07).
        chunk_model = OnnxChunkModel(path, threads=args.threads)
        chunk_model(audio)  # warm-up
        onnx_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        with torch.inference_mode():
            model(audio)  # warm-up
            timings = in_turn({"onnxruntime": lambda: chunk_model(audio), "PyTorch fp32": lambda: model(audio)},
                              rounds=args.rounds, warmup=0)
    onnx_out, torch_out = timings.outputs["onnxruntime"], timings.outputs["PyTorch fp32"]
    error = ((onnx_out - torch_out).abs().max() / torch_out.abs().max()).item()
    ratios = timings.ratios("onnxruntime", "PyTorch fp32")
    print(f"one chunk, {args.rounds} rounds in turn: onnxruntime {timings.listed('onnxruntime')} s, PyTorch fp32 "
          f"{timings.listed('PyTorch fp32')} s")
    print(f"onnxruntime / PyTorch per round {', '.join(f'{r:.3f}' for r in ratios)} -> median "
          f"{timings.median_ratio('onnxruntime', 'PyTorch fp32'):.3f} (target <= 1); best of each "
          f"{timings.best('onnxruntime'):.2f} s against {timings.best('PyTorch fp32'):.2f} s; "
          f"max relative difference {error:.1e}")
    print(f"peak RSS of the process up to onnxruntime's first run: {onnx_peak:.1f} GiB")


if __name__ == "__main__":
    main()
