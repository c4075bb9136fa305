"""Run from an MSST checkout: what train_ddp.py / valid_ddp.py's workers do up to the CUDA-only part.

    python <this file> <report.json> <train.py arguments...>     (cwd = the MSST checkout)

MSST's DDP scripts start one worker per GPU with torch.multiprocessing.spawn; each worker is a
fresh interpreter, so the plugin reaches it only through the msst_compat.pth hook. A worker's
first step, setup_ddp, calls torch.cuda.set_device, which a CPU-only torch cannot do, and the
model then goes to cuda:<rank>. So this probe spawns two workers the same way (spawn start
method, gloo backend, which is setup_ddp's own fallback) and in each one, without any CUDA:
- imports the checkout's train_ddp and valid_ddp modules and records whether the
  get_model_from_config names that their worker functions call are msst_compat's wrapper;
- parses the arguments with MSST's own parse_args_train (from the sys.argv spawn passes on) and builds the model through
  train.train_model's global get_model_from_config, as train_model does;
- wraps it in DistributedDataParallel (CPU, gloo), runs one forward/backward and records
  the gradient norm after DDP's all-reduce (equal on both ranks if DDP synchronised them).
Each rank writes its findings into <report.json>.rank<N>; the parent merges them.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, world_size: int, report: str) -> None:
    import importlib

    from msst_compat.patching import is_patched

    train_ddp = importlib.import_module("train_ddp")
    valid_ddp = importlib.import_module("valid_ddp")
    train = sys.modules["train"]
    factory = train.train_model.__globals__["get_model_from_config"]
    # None: parse sys.argv, which spawn hands to its workers; train_ddp's workers get their
    # arguments exactly this way (train_model(None, rank, world_size)).
    args = train.parse_args_train(None)

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same initial weights on both ranks, as DDP expects
        model, config = factory(args.model_type, args.config_path)
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
        generator = torch.Generator().manual_seed(rank)  # different data per rank
        mixture = torch.randn(1, 2, config.audio.chunk_size, generator=generator)
        ddp_model(mixture).pow(2).mean().backward()
        grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    finally:
        dist.destroy_process_group()
    findings = {
        "rank": rank,
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "hook_on_meta_path": any(type(f).__name__ == "MSSTModuleFinder" for f in sys.meta_path),
        "train_ddp_worker_factory_patched": is_patched(
            train_ddp.train_model_single.__globals__["train_model"].__globals__["get_model_from_config"]),
        "valid_ddp_factory_patched": is_patched(valid_ddp.check_validation_single.__globals__["get_model_from_config"]),
        "model_class": type(model).__name__,
        "model_module": type(model).__module__,
        "instruments": list(config.training.instruments),
        "grad_norm": float(grad_norm),
    }
    with open(f"{report}.rank{rank}", "w", encoding="utf-8") as handle:
        json.dump(findings, handle)


def main() -> None:
    report = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]  # the workers see train.py's arguments only
    sys.path.insert(0, os.getcwd())  # the checkout, as when its scripts run from there
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    os.environ["USE_LIBUV"] = "0"  # as MSST's setup_ddp
    world_size = 2
    mp.spawn(worker, args=(world_size, report), nprocs=world_size, join=True)
    merged = [json.load(open(f"{report}.rank{rank}", encoding="utf-8")) for rank in range(world_size)]
    merged_report = {"parent_pid": os.getpid(), "workers": merged}
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(merged_report, handle, indent=1)


if __name__ == "__main__":
    main()
