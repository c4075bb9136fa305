"""Where one chunk's time goes in onnxruntime and in PyTorch fp32 (a benchmark, not a test).

Exports the paper model (or --config) and runs one chunk in each runtime under its own profiler,
after a warm-up: onnxruntime's, with the package's session options (`onnx_export.session_options`),
and torch's over the model's forward. Prints, for each, the seconds of the matrix products (with
their FLOPs and GFLOP/s), of the depthwise convs and of everything else, the largest product shapes,
and what onnxruntime's products would take at PyTorch's rate: the part of the gap between the two
runtimes that is the GEMM kernels' speed (MLAS against torch's BLAS) rather than the graph.
Both profilers add to the times, mostly to the many small ops (inside onnxruntime's Scans, in
PyTorch's scan loop), little to the large products; so the gap itself is taken from unprofiled
chunks, the two runtimes in turn (`timing.in_turn`, as in onnx_speed.py).

    python benchmarks/onnx_profile.py [--chunk_size 352800] [--config PATH] [--rounds 2] [--top 6]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # as the package's commands do, for both runtimes

import torch  # noqa: E402

from bsmamba2_plugin.onnx_export import OnnxChunkModel, export_onnx, session_options  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_speed import add_model_arguments, benchmark_model  # noqa: E402
from runtime_profiles import onnxruntime_profile, report, torch_profile  # noqa: E402
from timing import add_rounds_argument, in_turn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_rounds_argument(parser, 2, "one unprofiled chunk in each runtime, for the gap")
    parser.add_argument("--top", type=int, default=6, help="product shapes listed per runtime (default 6)")
    args = parser.parse_args()
    import onnxruntime

    model, audio = benchmark_model(args, f"{onnxruntime.__version__}, its own choice of threads")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bsmamba2.onnx"
        export_onnx(model, path, chunk_samples=args.chunk_size)
        options = session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "onnxruntime_profile")
        chunk_model = OnnxChunkModel(path, options=options)
        for _ in range(2):  # warm-up, then the profiled run (the profile's last model_run)
            chunk_model(audio)
        onnx = onnxruntime_profile(chunk_model.session.end_profiling())
        del chunk_model  # its arena: two sessions' would not fit beside the model on a 24 GiB machine
        plain = OnnxChunkModel(path)
        with torch.inference_mode():
            model(audio)  # warm-up, which also outlasts onnxruntime's threads spinning after its run
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                start = time.perf_counter()
                model(audio)
                wall = time.perf_counter() - start
            timings = in_turn({"onnxruntime": lambda: plain(audio), "PyTorch fp32": lambda: model(audio)},
                              rounds=args.rounds, warmup=1)
    report({"onnxruntime": onnx, "PyTorch fp32": torch_profile(prof.key_averages(group_by_input_shape=True), wall)},
           timings, args.top)


if __name__ == "__main__":
    main()
