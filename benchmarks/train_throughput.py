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
Each variant has its own model and optimizer; after their warm-ups they run in turn, one step of
each per round (`--steps` rounds, `timing.in_turn`), and the ratios are the medians of the rounds'
ratios, as the host's speed drifts within a run.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import in_turn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_config(path: str) -> Any:
    """The MSST config at `path`; a missing or bad one ends the script with one line naming it."""
    try:
        return load_config(path)
    except ConfigError as error:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {error}") from None


@dataclass
class TrainingStep:
    """One variant's training step, ready to run: `run()` does forward, loss, backward, AdamW and EMA
    (and waits for the GPU on CUDA)."""

    run: Callable[[], None]
    parameters: int
    precision: Precision


def build_training_step(config: Any, device: torch.device, batch: int, backend: str | None = None,
                        precision: Precision | None = None, compiled: bool = False) -> TrainingStep:
    """The trainer's step on `config`'s model and random audio of its chunk size, with its own model,
    optimizer and EMA, so that variants can run in turn.

    `precision`: the autocast of the forward; default, what the trainer picks from training.use_amp.
    `compiled`: the forward through torch.compile, as training.compile (the first run compiles)."""
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
        if device.type == "cuda":
            torch.cuda.synchronize()

    return TrainingStep(step, sum(p.numel() for p in model.parameters()), precision)


def measure_training_step(config: Any, device: torch.device, batch: int, steps: int = 5, warmup: int = 1,
                          backend: str | None = None, precision: Precision | None = None,
                          compiled: bool = False) -> dict[str, float]:
    """Seconds per training step (mean of `steps` after `warmup`), and peak GPU memory in GiB on CUDA, of
    one variant alone (backend_paths.py: each backend's memory on its own)."""
    step = build_training_step(config, device, batch, backend, precision, compiled)
    for _ in range(warmup):
        step.run()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step.run()
    result = {"seconds": (time.perf_counter() - start) / steps, "amp": float(step.precision.dtype is not None),
              "parameters": step.parameters}
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
    if args.steps < 1:
        p.error(f"--steps {args.steps}: expected at least 1 timed round")
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
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    variants: dict[tuple[str, bool], TrainingStep] = {}
    first_steps: dict[tuple[str, bool], float] = {}
    peaks: dict[tuple[str, bool], float] = {}
    for compiled in modes:
        for precision in (Precision("fp32", None, "benchmark"), mixed):
            key = precision.name, compiled
            try:
                variants[key] = step = build_training_step(config, device, batch, args.backend, precision, compiled)
                for i in range(args.warmup):  # each variant's warm-up (and compile) before any is timed
                    if device.type == "cuda" and i == args.warmup - 1:
                        torch.cuda.reset_peak_memory_stats()
                    started = time.perf_counter()
                    step.run()
                    if i == 0:
                        first_steps[key] = time.perf_counter() - started
                if device.type == "cuda" and args.warmup:
                    peaks[key] = torch.cuda.max_memory_allocated() / 2**30
            except TrainingConfigError as error:
                raise SystemExit(f"{Path(sys.argv[0]).name}: {error}") from None
    # One step of each variant per round: the host's drift in speed reaches all alike.
    timings = in_turn({key: step.run for key, step in variants.items()}, rounds=args.steps, warmup=0)
    for key, step in variants.items():
        name, compiled = key
        seconds = statistics.median(timings.seconds[key])
        print(f"config {Path(args.config).name}: {step.parameters / 1e6:.2f} M parameters, batch {batch} x"
              f" {chunk / rate:.2f} s, device {device}, {name}{', compiled' if compiled else ''},"
              f" backend {args.backend or resolve_backend(None)}, threads {torch.get_num_threads()}")
        print(f"  {seconds:.3f} s per step (median; rounds {', '.join(f'{t:.3f}' for t in timings.seconds[key])})"
              f" = {1 / seconds:.2f} steps/s, {batch / seconds:.2f} training examples/s,"
              f" {batch * chunk / rate / seconds:.2f} s of audio per second")
        if compiled and key in first_steps:
            print(f"  first step (compiling) {first_steps[key]:.1f} s")
        if key in peaks:
            print(f"  peak GPU memory {peaks[key]:.2f} GiB (its last warm-up step)")
    for compiled in modes:
        ratios = timings.ratios(("fp32", compiled), (mixed.name, compiled))
        print(f"{mixed.name} / fp32 steps per second{', both compiled' if compiled else ''}: per round"
              f" {', '.join(f'{r:.2f}x' for r in ratios)}, median {statistics.median(ratios):.2f}x"
              f" (target >= 1.5x where bf16 is native)")
    if len(modes) == 2:
        ratios = timings.ratios(("fp32", False), (mixed.name, True))
        print(f"compiled {mixed.name} / eager fp32 steps per second: median {statistics.median(ratios):.2f}x")
    print(f"the trainer here picks {trainer_pick.reason}")
    if device.type != "cuda":
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (the whole process,"
              f" {len(variants)} models with their optimizers)")


if __name__ == "__main__":
    main()
