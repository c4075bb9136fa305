"""Training throughput of bsmamba2_plugin.train's step (forward, paper loss, backward, AdamW, EMA).

    python benchmarks/train_throughput.py                                   # small config, CPU
    python benchmarks/train_throughput.py --config configs/bsmamba2_vocals_paper.yaml \
        --chunk_size 44100 --batch_size 1 --steps 2 --compile both          # paper width, 1 s, CPU
    python benchmarks/train_throughput.py --config configs/bsmamba2_vocals_paper.yaml --device cuda \
        [--backend mamba_ssm|torch]                                         # paper: batch 5 x 8 s, bf16

Prints steps, training examples and seconds of audio per second, on random audio of the config's
chunk size (data loading excluded: it is measured by the trainer's progress bar), for float32 and
for mixed precision (bf16 autocast on a CPU; training.amp_dtype on CUDA) in the same run, their
ratio (target on a CPU with native bf16: >= 1.5x), and the precision the trainer picks here.
`--compile on` runs both through torch.compile as training.compile does (the first step, the
compile, is printed apart); `--compile both` measures eager and compiled in the same run.
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # before torch allocates, as the trainer's command does

import torch  # noqa: E402

from bsmamba2_plugin.config import ConfigError, load_config  # noqa: E402
from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.model.backend import BACKENDS, resolve_backend  # noqa: E402
from bsmamba2_plugin.precision import Precision, autocast, training_precision  # noqa: E402
from bsmamba2_plugin.train.compiled import check_compilable, compile_for_training  # noqa: E402
from bsmamba2_plugin.train.errors import TrainingConfigError  # noqa: E402
from bsmamba2_plugin.train.ema import WeightEMA  # noqa: E402
from bsmamba2_plugin.train.loss import PaperLoss  # noqa: E402
from bsmamba2_plugin.train.optimizers import build_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_config(path: str) -> Any:
    """The MSST config at `path`; a missing or bad one ends the script with one line naming it."""
    try:
        return load_config(path)
    except ConfigError as error:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {error}") from None


def measure_training_step(config: Any, device: torch.device, batch: int, steps: int = 5, warmup: int = 1,
                          backend: str | None = None, precision: Precision | None = None,
                          compiled: bool = False) -> dict[str, float]:
    """Seconds per training step (and peak GPU memory in GiB on CUDA) of `config`'s model on random audio.

    `precision`: the autocast of the forward; default, what the trainer picks from training.use_amp.
    `compiled`: the forward through torch.compile, as training.compile; the first warm-up step's
    seconds (the compile) are returned as "first_step"."""
    chunk = int(config.audio.chunk_size)
    if precision is None:
        precision = training_precision(bool(config.training.get("use_amp", False)),
                                       str(config.training.get("amp_dtype", "bfloat16")), device)
    torch.manual_seed(0)
    model = BSMamba2.from_config(config, backend=backend).to(device).train()
    loss_fn = PaperLoss(model.loss_settings, float(config.training.get("waveform_loss_weight", 10.0))).to(device)
    optimizer = build_optimizer(config, model.parameters())
    ema = WeightEMA(model, float(config.training.get("ema_momentum", 0.999) or 0.999))
    if compiled:
        check_compilable(model, device, chunk_size_augm=False)  # the trainer's start-up refusals
    forward = compile_for_training(model) if compiled else model
    mixture = torch.randn(batch, model.audio_channels, chunk, device=device) * 0.1
    target = torch.randn(batch, model.num_stems, model.audio_channels, chunk, device=device) * 0.05

    def step() -> None:
        with autocast(precision, device):
            estimate = forward(mixture)
        loss = loss_fn(estimate, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(config.training.get("grad_clip", 0) or 1e9))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    first_step = math.nan
    for i in range(warmup):
        started = time.perf_counter()
        step()
        if i == 0:
            first_step = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    result = {"seconds": (time.perf_counter() - start) / steps, "first_step": first_step,
              "amp": float(precision.dtype is not None),
              "parameters": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "bsmamba2_vocals_small.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=None, help="default: training.batch_size")
    p.add_argument("--chunk_size", type=int, default=None, help="samples per example (default: audio.chunk_size)")
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="the forward through torch.compile (training.compile): off, on, or both in one run")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="Mamba2 implementation (default: BSMAMBA2_BACKEND, else auto)")
    args = p.parse_args()
    config = read_config(args.config)
    if args.chunk_size is not None:
        if args.chunk_size < 1:
            p.error(f"--chunk_size {args.chunk_size}: expected a positive number of samples")
        config.audio.chunk_size = args.chunk_size
    if args.compile != "off" and args.warmup < 1:
        p.error(f"--compile {args.compile} needs --warmup >= 1: the first step compiles and is not timed")
    device = torch.device(args.device)
    batch = args.batch_size or int(config.training.batch_size)
    chunk = int(config.audio.chunk_size)
    rate = int(config.audio.get("sample_rate", 44100))
    trainer_pick = training_precision(bool(config.training.get("use_amp", False)),
                                      str(config.training.get("amp_dtype", "bfloat16")), device)
    mixed_dtype = trainer_pick.dtype or torch.bfloat16
    mixed = Precision("bf16" if mixed_dtype is torch.bfloat16 else "fp16", mixed_dtype, "benchmark")
    results = {}
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    for compiled in modes:
        for precision in (Precision("fp32", None, "benchmark"), mixed):
            try:
                results[precision.name, compiled] = result = measure_training_step(
                    config, device, batch, args.steps, args.warmup, args.backend, precision, compiled)
            except TrainingConfigError as error:
                raise SystemExit(f"{Path(sys.argv[0]).name}: {error}") from None
            seconds = result["seconds"]
            print(f"config {Path(args.config).name}: {result['parameters'] / 1e6:.2f} M parameters, batch {batch} x"
                  f" {chunk / rate:.2f} s, device {device}, {precision.name}{', compiled' if compiled else ''},"
                  f" backend {args.backend or resolve_backend(None)}, threads {torch.get_num_threads()}")
            print(f"  {seconds:.3f} s per step = {1 / seconds:.2f} steps/s, {batch / seconds:.2f} training examples/s, "
                  f"{batch * chunk / rate / seconds:.2f} s of audio per second")
            if compiled:
                print(f"  first step (compiling) {result['first_step']:.1f} s")
            if "peak_gib" in result:
                print(f"  peak GPU memory {result['peak_gib']:.2f} GiB")
    for compiled in modes:
        ratio = results["fp32", compiled]["seconds"] / results[mixed.name, compiled]["seconds"]
        print(f"{mixed.name} / fp32 steps per second{', both compiled' if compiled else ''}: {ratio:.2f}x"
              f" (target >= 1.5x where bf16 is native)")
    if len(modes) == 2:
        print(f"compiled {mixed.name} / eager fp32 steps per second: "
              f"{results['fp32', False]['seconds'] / results[mixed.name, True]['seconds']:.2f}x")
    print(f"the trainer here picks {trainer_pick.reason}")
    if device.type != "cuda":
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (the whole process)")


if __name__ == "__main__":
    main()
