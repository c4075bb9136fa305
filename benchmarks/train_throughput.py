"""Training throughput of bsmamba2_plugin.train's step (forward, paper loss, backward, AdamW, EMA).

    python benchmarks/train_throughput.py                                   # small config, CPU
    python benchmarks/train_throughput.py --config configs/bsmamba2_vocals_paper.yaml --device cuda
                                                                            # paper: batch 5 x 8 s, bf16

Prints training examples per second and seconds of audio per second, on random audio of the
config's chunk size (data loading excluded: it is measured by the trainer's progress bar).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # before torch allocates, as the trainer's command does

import torch  # noqa: E402

from bsmamba2_plugin.config import load_config  # noqa: E402
from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.train.ema import WeightEMA  # noqa: E402
from bsmamba2_plugin.train.loss import PaperLoss  # noqa: E402
from bsmamba2_plugin.train.optimizers import build_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "bsmamba2_vocals_small.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=None, help="default: training.batch_size")
    args = p.parse_args()
    config = load_config(args.config)
    device = torch.device(args.device)
    batch = args.batch_size or int(config.training.batch_size)
    chunk = int(config.audio.chunk_size)
    rate = int(config.audio.get("sample_rate", 44100))
    amp = device.type == "cuda" and bool(config.training.get("use_amp", False))
    dtype = torch.bfloat16 if str(config.training.get("amp_dtype", "bfloat16")) == "bfloat16" else torch.float16
    model = BSMamba2.from_config(config).to(device).train()
    loss_fn = PaperLoss(model.loss_settings, float(config.training.get("waveform_loss_weight", 10.0))).to(device)
    optimizer = build_optimizer(config, model.parameters())
    ema = WeightEMA(model, float(config.training.get("ema_momentum", 0.999) or 0.999))
    stems = model.num_stems
    mixture = torch.randn(batch, model.audio_channels, chunk, device=device) * 0.1
    target = torch.randn(batch, stems, model.audio_channels, chunk, device=device) * 0.05

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
            estimate = model(mixture)
        loss = loss_fn(estimate, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(config.training.get("grad_clip", 0) or 1e9))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"config {Path(args.config).name}: {params:.2f} M parameters, batch {batch} x {chunk / rate:.2f} s, "
          f"device {device}, {'amp ' + str(dtype) if amp else 'float32'}, threads {torch.get_num_threads()}")
    print(f"{seconds:.3f} s per step, {batch / seconds:.2f} training examples/s, "
          f"{batch * chunk / rate / seconds:.2f} s of audio per second")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
