"""The training run: MSST's loop with the paper's recipe, resumable at any optimizer step.

State that a resume restores (all in `last_bsmamba2.ckpt`): raw and EMA weights, optimizer,
scheduler, grad scaler, epoch, batches done in the epoch, optimizer steps, whether the
epoch's validation ran, best metric, metric and loss history, RNG states and the skip
counters. Training examples are a function of (seed, epoch, index), so the data after a
resume are the data the uninterrupted run would have seen.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from bsmamba2_plugin.checkpoint import load_weights, load_weights_only, read_state_dict, unwrap_state_dict
from bsmamba2_plugin.config import load_config, resolve_model_type
from bsmamba2_plugin.config_keys import warn_unused_keys
from bsmamba2_plugin.evaluate.scoring import ALWAYS, average
from bsmamba2_plugin.metrics import METRIC_DIRECTIONS
from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.model.backend import resolve_backend
from bsmamba2_plugin.model.projection import requested_cpu_gemm
from bsmamba2_plugin.precision import training_precision
from bsmamba2_plugin.settings import number_in, positive_int, sample_rate, true_or_false, use_amp_setting

from .augmentations import ChunkSizeAugmentation
from .checkpoints import (
    FORMAT_VERSION,
    MODEL_TYPE,
    best_checkpoint_path,
    capture_rng_state,
    every_epoch_checkpoint_path,
    last_checkpoint_path,
    load_compatible_weights,
    read_training_checkpoint,
    restore_rng_state,
    save_atomically,
)
from .compiled import check_compilable, compile_for_training, compile_setting, first_compile
from .dataset import COUNTER_NAMES, MSSTrainingDataset, SeededMSSTDataset
from .distributed import DistributedContext
from .ema import WeightEMA
from .errors import NonFiniteLossError, TrainingConfigError
from .lora import WeightSpaceLoRA, attach_lora, load_adapter, lora_settings
from .peft_lora import BASE_CHECKPOINT, PeftLoRA, attach_peft, peft_folder_for, save_base_checkpoint
from .loss import COEF_DEFAULTS, MSST_LOSSES, MSSTLoss, PaperLoss
from .optimizers import build_optimizer, build_scheduler
from .tensorboard_log import ScalarLog, open_wandb
from .validation import append_csv, find_validation_tracks, report_text, timed_validation


class EpochBatches(Sampler[int]):
    """Example indices of one epoch for this process, from batch `start` on.

    Global batch b of the epoch is examples [(b * world + rank) * batch, ... + batch) on each rank.
    """

    def __init__(self, num_steps: int, batch_size: int, rank: int, world_size: int, start: int):
        self.num_steps, self.batch_size, self.rank, self.world_size, self.start = (
            num_steps, batch_size, rank, world_size, start)

    def __iter__(self):
        for b in range(self.start, self.num_steps):
            base = (b * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return max(self.num_steps - self.start, 0) * self.batch_size


@dataclass
class RunState:
    epoch: int = 0
    batches_done: int = 0          # of the current epoch, always at an optimizer-step boundary
    global_step: int = 0           # optimizer steps taken
    epoch_validated: bool = False
    best_metric: float = -math.inf  # in the metric's own unit (sign handled by `better`)
    all_metrics: dict[str, Any] = field(default_factory=dict)
    all_losses: dict[str, list[float]] = field(default_factory=dict)
    nonfinite_skipped: int = 0
    data_counters: list[int] = field(default_factory=lambda: [0] * len(COUNTER_NAMES))


def required(section: Any, name: str, key: str) -> Any:
    if key not in section:
        raise TrainingConfigError(f"the config has no {name}.{key}, which training needs")
    return section[key]


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dist = DistributedContext.from_environment()
        self.out = sys.stdout if self.dist.is_main else open(os.devnull, "w")
        self.config = load_config(args.config_path)
        if self.dist.is_main:
            warn_unused_keys(self.config, str(args.config_path))
        training = required(self.config, "", "training")
        try:
            resolve_model_type(self.config, args.model_type, origin=str(args.config_path))
        except ValueError as error:
            raise TrainingConfigError(str(error)) from error
        for key in ("instruments", "batch_size", "num_steps", "num_epochs", "lr"):
            required(training, "training", key)
        self.chunk_size = positive_int(required(self.config.audio, "audio", "chunk_size"), "audio.chunk_size")
        self.batch_size = positive_int(training.batch_size, "training.batch_size")
        self.num_steps = positive_int(training.num_steps, "training.num_steps")
        self.num_epochs = positive_int(training.num_epochs, "training.num_epochs")
        self.accumulation = positive_int(training.get("gradient_accumulation_steps", 1),
                                         "training.gradient_accumulation_steps")
        # 0 (or absent) is MSST's "no clipping"
        self.grad_clip = number_in(training.get("grad_clip", 0) or 0, "training.grad_clip", 0)
        self.normalize = true_or_false(training.get("normalize", False) or False, "training.normalize")
        self.results_path = Path(args.results_path)
        self.metric = args.metric_for_scheduler
        self.metrics = list(dict.fromkeys(getattr(args, "metrics", None) or [self.metric]))
        if self.metric not in METRIC_DIRECTIONS:
            raise TrainingConfigError(
                f"--metric_for_scheduler {self.metric!r}: choose one of {sorted(METRIC_DIRECTIONS)}")
        self.chunk_augmentation = ChunkSizeAugmentation.from_config(self.config)

        self.device = self._pick_device()
        # the environment's model settings, checked before any work rather than at the first forward
        resolve_backend(None)
        requested_cpu_gemm()
        self.autocast_dtype = self._autocast_dtype(training)
        self.compiled = compile_setting(training, args.compile)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)

        try:
            self.model = BSMamba2.from_config(self.config).to(self.device)
        except ValueError as error:  # a model value BSMamba2 refuses, named by it
            raise TrainingConfigError(f"{args.config_path}: {error}") from None
        if args.start_check_point:
            self._load_start_weights(args.start_check_point)
        self.lora: WeightSpaceLoRA | PeftLoRA | None = self._attach_lora()
        self._freeze_layers()
        if self.compiled:
            check_compilable(self.model, self.device, self.chunk_augmentation is not None)
        self.loss_fn = self._build_loss(training)
        self.loss_fn.check_length(self.chunk_augmentation.minimum if self.chunk_augmentation else self.chunk_size)
        self.loss_fn.to(self.device)
        self._set_memory_fraction()
        self.optimizer = build_optimizer(self.config, self.model.parameters(), self.device)
        self.scheduler = build_scheduler(self.config, self.optimizer)
        decay = number_in(training.get("ema_momentum", 0) or 0, "training.ema_momentum", 0, 1, high_open=True)
        self.ema = WeightEMA(self.model, decay) if decay > 0 else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.state = RunState()

        self.dataset = self._build_dataset()
        self.valid_tracks = []
        if args.valid_path:
            instruments = self._validated_instruments()
            self.valid_tracks = find_validation_tracks(args.valid_path, instruments,
                                                       sample_rate(self.config))
        else:
            self._print("No --valid_path: no validation, no best checkpoint; last_bsmamba2.ckpt is still written")

        self.resumed_from = self._resume_or_start()
        self.train_model: nn.Module = self.model
        self.compile_pending = self.compiled  # until the first step has compiled forward and backward
        if self.compiled:
            self.train_model = compile_for_training(self.model)
            self._print("training.compile: the training forward runs through torch.compile, each layer shape "
                        "compiled once on the first step (inductor's cache makes later runs quicker); validation "
                        "runs eagerly")
        if self.dist.enabled:  # around the compiled layers: DDP's gradient hooks stay eager
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        wandb_run = None
        if self.dist.is_main:
            shown_args = {k: v for k, v in vars(args).items() if k != "wandb_key"}  # never log the key
            wandb_run = open_wandb(getattr(args, "wandb_key", ""), getattr(args, "wandb_offline", False),
                                   self.results_path, {"config": self.config.to_dict(), "args": shown_args,
                                                       "batch_size": self.batch_size})
        self.log = ScalarLog(self.results_path / "tensorboard", enabled=self.dist.is_main and not args.no_tensorboard,
                             wandb_run=wandb_run)

    # ----------------------------------------------------------------- setup
    def _load_start_weights(self, path: str) -> None:
        origin = f"--start_check_point {path}"
        if not getattr(self.args, "load_only_compatible_weights", False):
            load_weights(self.model, read_state_dict(path), origin=origin)
            self._print(f"Loaded weights from {path}")
            return
        loaded, skipped = load_compatible_weights(self.model, read_state_dict(path))
        self._print(f"Loaded {len(loaded)} of {len(self.model.state_dict())} tensors from {path} "
                    f"(--load_only_compatible_weights)")
        for line in skipped:
            self._print(f"  not loaded: {line}")

    def _attach_lora(self) -> WeightSpaceLoRA | PeftLoRA | None:
        """--train_lora_loralib (weight-space LoRA, lora.py) or --train_lora_peft (peft_lora.py), MSST's `lora:`."""
        a = self.args
        loralib, peft = getattr(a, "train_lora_loralib", False), getattr(a, "train_lora_peft", False)
        for flag, needs, on in (("--lora_checkpoint_loralib", "--train_lora_loralib", loralib),
                                ("--lora_checkpoint_peft", "--train_lora_peft", peft)):
            if getattr(a, flag[2:], "") and not on:
                raise TrainingConfigError(f"{flag} needs {needs} (as in MSST)")
        if loralib and peft:
            raise TrainingConfigError("--train_lora_loralib and --train_lora_peft: choose one")
        if peft:
            attached, summary = attach_peft(self.model, self.config.get("lora", None),
                                            getattr(a, "lora_checkpoint_peft", ""))
            self._print(summary)
            return attached
        if not loralib:
            return None
        r, alpha = lora_settings(self.config.get("lora", None))
        names = attach_lora(self.model, r, alpha)
        if a.lora_checkpoint_loralib:
            stored = load_weights_only(Path(a.lora_checkpoint_loralib))  # MSST's files pickle their scheduler
            adapter = stored.get("lora_state_dict") or unwrap_state_dict(stored, a.lora_checkpoint_loralib)
            count = load_adapter(self.model, adapter,
                                 f"--lora_checkpoint_loralib {a.lora_checkpoint_loralib}")
            self._print(f"Loaded {count} LoRA tensors from {a.lora_checkpoint_loralib}")
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self._print(f"LoRA: r={r}, lora_alpha={alpha:g} on {len(names)} linear layers, Mamba2's in_proj and "
                    f"out_proj included ({trainable} trainable parameters)")
        return WeightSpaceLoRA(alpha / r)

    def _freeze_layers(self) -> None:
        """MSST's --freeze_layers: parameters whose name starts with any prefix get requires_grad False."""
        prefixes = getattr(self.args, "freeze_layers", None)
        if not prefixes:
            return
        frozen = [name for name, p in self.model.named_parameters() if any(name.startswith(x) for x in prefixes)]
        if not frozen:
            names = sorted({name.split(".")[0] for name, _ in self.model.named_parameters()})
            raise TrainingConfigError(f"--freeze_layers {prefixes}: no parameter name starts with these; "
                                      f"top-level names are {names}")
        for name, parameter in self.model.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)
        total = sum(1 for _ in self.model.parameters())
        self._print(f"Frozen layers: {len(frozen)}; trainable layers: {total - len(frozen)} "
                    f"(--freeze_layers {' '.join(prefixes)})")

    def _build_loss(self, training: Any) -> nn.Module:
        """The paper's loss unless --loss or --use_standard_loss asks for MSST's (default masked_loss)."""
        a = self.args
        names = getattr(a, "loss", None)
        if names is None and not getattr(a, "use_standard_loss", False):
            return PaperLoss(self.model.loss_settings,
                             number_in(training.get("waveform_loss_weight", 10.0), "training.waveform_loss_weight", 0))
        names = names or ["masked_loss"]
        coefficients = {n: getattr(a, f"{n}_coef", COEF_DEFAULTS[n]) for n in MSST_LOSSES}
        return MSSTLoss(names, coefficients, self.config)

    def _set_memory_fraction(self) -> None:
        if not getattr(self.args, "set_per_process_memory_fraction", False):
            return
        if self.device.type != "cuda":
            self._print("--set_per_process_memory_fraction has no effect on CPU (it limits CUDA memory)")
            return
        torch.cuda.set_per_process_memory_fraction(1.0, self.device)  # MSST's value
        torch.cuda.empty_cache()

    def _print(self, *parts: Any, end: str = "\n") -> None:
        print(*parts, file=self.out, flush=True, end=end)

    def _pick_device(self) -> torch.device:
        if self.args.force_cpu or not torch.cuda.is_available():
            if self.args.device_ids and len(self.args.device_ids) > 1 and not self.dist.enabled:
                raise TrainingConfigError("several --device_ids need CUDA; on CPU run one process (or torchrun)")
            return torch.device("cpu")
        if self.dist.enabled:
            torch.cuda.set_device(self.dist.local_rank)
            return torch.device("cuda", self.dist.local_rank)
        if len(self.args.device_ids) > 1:
            raise TrainingConfigError(
                f"--device_ids {self.args.device_ids}: for several GPUs launch with torchrun, e.g. "
                f"`torchrun --nproc_per_node {len(self.args.device_ids)} -m bsmamba2_plugin.train ...` "
                f"(DistributedDataParallel; MSST's DataParallel mode is not implemented)"
            )
        return torch.device("cuda", self.args.device_ids[0])

    def _autocast_dtype(self, training: Any) -> torch.dtype | None:
        try:  # on a CPU, bf16 where it multiplies bf16 natively (precision.py)
            chosen = training_precision(use_amp_setting(training), str(training.get("amp_dtype", "bfloat16")),
                                        self.device)
        except ValueError as error:
            raise TrainingConfigError(str(error)) from None
        absent = "" if "use_amp" in training else " (training.use_amp absent: true, as in MSST)"
        self._print(f"Training precision: {chosen.reason}{absent}")
        return chosen.dtype

    def _validated_instruments(self) -> list[str]:
        target = self.config.training.get("target_instrument", None)
        return [target] if target else list(self.config.training.instruments)

    def _build_dataset(self):
        examples = self.num_steps * self.batch_size * self.dist.world_size
        if self.args.dataset_type in (1, 4):
            dataset = MSSTrainingDataset(self.config, self.args.data_path, self.args.dataset_type, examples,
                                         self.args.seed)
            self._print(f"Training data: {dataset.report.summary()}")
            return dataset
        return SeededMSSTDataset(self.config, self.args.data_path, self.args.dataset_type, examples, self.args.seed,
                                 str(self.results_path / f"metadata_{self.args.dataset_type}.pkl"))

    def _resume_or_start(self) -> Path | None:
        last = last_checkpoint_path(self.results_path)
        if self.args.fresh or not last.is_file():
            self._apply_msst_start_flags()
            return None
        checkpoint = read_training_checkpoint(last)
        if checkpoint.get("trainer_format") != FORMAT_VERSION:
            raise TrainingConfigError(
                f"{last} was not written by bsmamba2_plugin.train (format {checkpoint.get('trainer_format')}); "
                f"pass --fresh to start over in {self.results_path}, or use another --results_path"
            )
        raw = checkpoint.get("raw_model_state_dict", checkpoint["model_state_dict"])
        load_weights(self.model, raw, origin=f"resume checkpoint {last}")
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint.get("ema_state_dict", checkpoint["model_state_dict"]),
                                     checkpoint.get("ema_updates", 0))
        if checkpoint.get("scaler_state_dict"):
            self.scaler.load_state_dict(checkpoint["scaler_state_dict"])
        s = self.state
        s.epoch, s.batches_done, s.global_step = checkpoint["epoch"], checkpoint["batches_done"], checkpoint["global_step"]
        s.epoch_validated = checkpoint["epoch_validated"]
        s.best_metric = checkpoint["best_metric"]
        s.all_metrics, s.all_losses = checkpoint["all_metrics"], checkpoint["all_losses"]
        s.nonfinite_skipped = checkpoint["nonfinite_skipped"]
        s.data_counters = list(checkpoint["data_counters"])
        restore_rng_state(checkpoint["rng_state"])
        stored = checkpoint.get("config", {})
        now = self.config.to_dict()
        changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        if changed:
            warnings.warn(f"resuming with a config that differs from the checkpoint's in section(s) {changed}")
        self._print(f"Resuming from {last}: epoch {s.epoch}, batch {s.batches_done}/{self.num_steps}, "
                    f"optimizer step {s.global_step}")
        return last

    def _apply_msst_start_flags(self) -> None:
        """MSST's --load_* flags: take more than the weights from --start_check_point."""
        a = self.args
        wanted = (a.load_optimizer, a.load_scheduler, a.load_epoch, a.load_best_metric, a.load_all_metrics,
                  a.load_all_losses)
        if not a.start_check_point or not any(wanted):
            return
        checkpoint = read_training_checkpoint(a.start_check_point)
        if a.load_optimizer and "optimizer_state_dict" in checkpoint:
            self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        if a.load_scheduler and checkpoint.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        if a.load_epoch and "epoch" in checkpoint:
            self.state.epoch = int(checkpoint["epoch"]) + 1
        if a.load_best_metric and "best_metric" in checkpoint:
            self.state.best_metric = float(checkpoint["best_metric"])
        if a.load_all_metrics and "all_metrics" in checkpoint:
            self.state.all_metrics = dict(checkpoint["all_metrics"])
        if a.load_all_losses and "all_losses" in checkpoint:
            self.state.all_losses = dict(checkpoint["all_losses"])

    # ----------------------------------------------------------- checkpoints
    def checkpoint_payload(self) -> dict[str, Any]:
        s = self.state
        raw = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        served = self.ema.state_dict() if self.ema is not None else raw
        if self.lora is not None:  # plain BSMamba2 names with the adapter merged in
            served = self.lora.merged_state_dict(served)
        payload: dict[str, Any] = {
            "model_state_dict": served,
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "epoch": s.epoch,
            "best_metric": s.best_metric,
            "all_metrics": s.all_metrics,
            "all_losses": s.all_losses,
            "optimizer_name": type(self.optimizer).__name__,
            "model_state_dict_holds": "ema" if self.ema is not None else "raw",
            "scaler_state_dict": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "global_step": s.global_step,
            "batches_done": s.batches_done,
            "epoch_validated": s.epoch_validated,
            "nonfinite_skipped": s.nonfinite_skipped,
            "data_counters": list(s.data_counters),
            "rng_state": capture_rng_state(),
            "config": self.config.to_dict(),
            "model_type": MODEL_TYPE,
            "trainer_format": FORMAT_VERSION,
        }
        if self.ema is not None or self.lora is not None:
            payload["raw_model_state_dict"] = raw
        if self.ema is not None:
            payload["ema_updates"] = self.ema.updates
            if self.lora is not None:
                payload["ema_state_dict"] = self.ema.state_dict()
        if self.lora is not None:
            payload["lora_state_dict"] = self.lora.adapter_state_dict(payload.get("ema_state_dict", raw))
            payload["lora_library"] = self.lora.library
        return payload

    def save_checkpoint(self, path: Path) -> None:
        """The checkpoint file; with --train_lora_peft also its adapter as a peft folder <file name>_lora_."""
        payload = self.checkpoint_payload()
        save_atomically(payload, path)
        if isinstance(self.lora, PeftLoRA):
            self.lora.save_folder(payload.get("ema_state_dict", payload["raw_model_state_dict"]),
                                  peft_folder_for(path))

    def save_last(self) -> None:
        if self.dist.is_main:
            self.save_checkpoint(last_checkpoint_path(self.results_path))

    # -------------------------------------------------------------- training
    def run(self) -> RunState:
        args, s = self.args, self.state
        self.results_path.mkdir(parents=True, exist_ok=True)
        if isinstance(self.lora, PeftLoRA) and self.dist.is_main:  # the base that the peft folders adapt
            base = self.results_path / BASE_CHECKPOINT
            save_base_checkpoint(self.lora.base_state_dict(self.model.state_dict()), base)
            self._print(f"LoRA base weights (un-merged): {base}; each checkpoint's adapter: <checkpoint>"
                        f"_lora_ (MSST valid.py: --start_check_point {base.name} --lora_checkpoint_peft <folder>)")
        self._print_header()
        started = time.time()
        if args.pre_valid and self.resumed_from is None and self.valid_tracks:
            self.validate_and_select(epoch=-1)
        try:
            while s.epoch < self.num_epochs:
                if s.batches_done < self.num_steps:
                    self.train_epoch()
                if not s.epoch_validated:
                    self.validate_and_select(s.epoch)
                s.epoch += 1
                s.batches_done = 0
                s.epoch_validated = False
        finally:
            self.log.close()
        self._print_summary(time.time() - started)
        return s

    def _print_header(self) -> None:
        eff = self.batch_size * self.accumulation * self.dist.world_size
        self._print(
            f"Instruments: {list(self.config.training.instruments)}"
            f" (target: {self.config.training.get('target_instrument', None)})\n"
            f"Metrics: {self.metrics}. Metric for best checkpoint and scheduler: {self.metric}\n"
            f"Loss: {self.loss_fn.describe()}\n"
            f"Batch size: {self.batch_size} Grad accum steps: {self.accumulation} Processes: {self.dist.world_size} "
            f"Effective batch size: {eff}\n"
            f"Dataset type: {self.args.dataset_type} Chunk: {self.chunk_size} samples"
            + (f" (chunk_size_augm: each batch cut to {self.chunk_augmentation.minimum}.."
               f"{self.chunk_augmentation.maximum})" if self.chunk_augmentation else "") + "\n"
            f"Optimizer: {self.config.training.get('optimizer', 'adam')} lr {self.config.training.lr} "
            f"Scheduler: {self.config.training.get('scheduler', 'ReduceLROnPlateau')} "
            f"Device: {self.device} Precision: {self.autocast_dtype or torch.float32}"
            f"{' (compiled)' if self.compiled else ''}\n"
            f"Model: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters\n"
            f"Train for: {self.num_epochs} epochs x {self.num_steps} batches; results in {self.results_path}"
        )
        if self.state.epoch >= self.num_epochs:
            self._print(f"Training already complete ({self.num_epochs} epochs) in {self.results_path}; "
                        f"pass --fresh to start over or raise training.num_epochs to continue")

    def _loader(self) -> DataLoader:
        a = self.args
        self.dataset.set_epoch(self.state.epoch)
        sampler = EpochBatches(self.num_steps, self.batch_size, self.dist.rank, self.dist.world_size,
                               self.state.batches_done)
        extra = {}
        if a.num_workers > 0:
            extra = dict(persistent_workers=a.persistent_workers, prefetch_factor=a.prefetch_factor)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=a.num_workers,
                          pin_memory=a.pin_memory, **extra)

    def _forward_loss(self, mixture: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
        if self.normalize:  # MSST's normalize_batch
            mean, std = mixture.mean(), mixture.std()
            if std != 0:
                mixture, stems = (mixture - mean) / std, (stems - mean) / std
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            estimate = self.train_model(mixture)
        return self.loss_fn(estimate, stems, mixture)

    def train_epoch(self) -> None:
        s, a = self.state, self.args
        self.train_model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        self._print(f"Train epoch: {s.epoch} Learning rate: {lr}")
        losses = s.all_losses.setdefault(f"epoch_{s.epoch}", [])
        in_row = 0
        window_bad = False
        bar = tqdm(total=self.num_steps, initial=s.batches_done, desc=f"epoch {s.epoch}", dynamic_ncols=True,
                   disable=not self.dist.is_main or a.no_progress, file=sys.stdout)
        self.optimizer.zero_grad(set_to_none=True)
        first = s.batches_done
        for offset, (stems, mixture, counters) in enumerate(self._loader()):
            index = first + offset  # batch index within the epoch
            boundary = (index + 1) % self.accumulation == 0 or index + 1 == self.num_steps
            for k, value in enumerate(counters.sum(0).tolist()):
                s.data_counters[k] += int(value)
            if self.chunk_augmentation is not None:  # MSST's music_collate_fn: the batch's first L samples
                length = self.chunk_augmentation.length(a.seed, s.epoch, index)
                stems, mixture = stems[..., :length], mixture[..., :length]
            mixture = mixture.to(self.device, non_blocking=True)
            stems = stems.to(self.device, non_blocking=True)
            sync = boundary or not self.dist.enabled
            context = self.train_model.no_sync() if not sync else nullcontext()
            with context, first_compile(self.compile_pending):
                loss = self._forward_loss(mixture, stems)
                finite, mean_loss = self.dist.all_finite_and_mean(loss)
                if finite:
                    self.scaler.scale(loss / self.accumulation).backward()
                    self.compile_pending = False
            if finite:
                in_row = 0
                losses.append(mean_loss)
                bar.set_postfix(loss=f"{mean_loss:.4f}", avg_loss=f"{np.mean(losses):.4f}")
            else:
                window_bad = True
                in_row = self._skip_nonfinite("loss", index, in_row, "skipped")
            bar.update(1)
            if not boundary:
                continue
            stepped = False
            if not window_bad:
                stepped = self._optimizer_step()
                if not stepped and not self.scaler.is_enabled():
                    in_row = self._skip_nonfinite("gradient", index, in_row, "step skipped")
            self.optimizer.zero_grad(set_to_none=True)
            window_bad = False
            s.batches_done = index + 1
            if stepped:
                s.global_step += 1
                self.log.scalars(s.global_step, {"train/loss": mean_loss, "train/lr": self.optimizer.param_groups[0]["lr"],
                                                 "train/nonfinite_skipped": s.nonfinite_skipped})
                if a.save_every_steps > 0 and s.global_step % a.save_every_steps == 0:
                    self.save_last()
        bar.close()
        s.batches_done = self.num_steps
        if losses:
            self._print(f"Training loss: {np.mean(losses):.6f}")
            self.log.scalars(s.global_step, {"train/epoch_loss": float(np.mean(losses))})
        self.save_last()

    def _optimizer_step(self) -> bool:
        """Unscale, clip, step, EMA. False when the gradient is not finite (the step is skipped)."""
        self.scaler.unscale_(self.optimizer)
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip if self.grad_clip > 0 else math.inf)
        finite = bool(torch.isfinite(norm))
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips by itself on overflow, and lowers the scale
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        if finite and self.ema is not None:
            self.ema.update(self.model)
        if finite and not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()  # linear_scheduler: per optimizer step, as MSST
        if finite:
            self.log.scalars(self.state.global_step + 1, {"train/grad_norm": float(norm)})
        return finite

    def _skip_nonfinite(self, what: str, index: int, in_row: int, action: str) -> int:
        """Count a non-finite loss or gradient; too many in a row stop the run. Returns the new run length."""
        s = self.state
        in_row += 1
        s.nonfinite_skipped += 1
        self._print(f"\nnon-finite {what} at epoch {s.epoch} batch {index}: {action} "
                    f"({in_row} in a row, {s.nonfinite_skipped} in all)")
        if in_row >= self.args.max_nonfinite_in_row:
            raise NonFiniteLossError(self._nonfinite_message(in_row))
        return in_row

    def _nonfinite_message(self, in_row: int) -> str:
        last = last_checkpoint_path(self.results_path)
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint had been written yet"
        return (f"{in_row} non-finite losses/gradients in a row (epoch {self.state.epoch}); stopping. {kept} "
                f"(unchanged). Check the data for NaN/inf samples, lower training.lr, or raise "
                f"--max_nonfinite_in_row.")

    # ------------------------------------------------------------ validation
    def validation_model(self) -> nn.Module:
        if self.ema is None:
            return self.model
        if not hasattr(self, "_ema_model"):
            self._ema_model = copy.deepcopy(self.model)
        self.ema.copy_to(self._ema_model)
        return self._ema_model

    def validate_and_select(self, epoch: int) -> None:
        s = self.state
        value = math.nan
        if self.valid_tracks and self.dist.is_main:
            result, seconds = timed_validation(self.validation_model(), self.valid_tracks, self.config, self.device,
                                               progress=not self.args.no_progress, metrics=self.metrics)
            self._print(report_text(result, seconds), end="")
            csv_path = append_csv(self.results_path, epoch, result)
            value = average(result.summaries, self.metric)
            per_instrument = {summary.stem: {m: summary.value(m) for m in dict.fromkeys([*ALWAYS, *self.metrics])}
                              for summary in result.summaries}
            averages = {m: average(result.summaries, m) for m in self.metrics}
            if epoch >= 0:
                s.all_metrics[f"epoch_{epoch}"] = per_instrument
            for instrument, metrics in per_instrument.items():
                self.log.scalars(s.global_step, {f"valid/{instrument}/{k}": v for k, v in metrics.items()})
            self.log.scalars(s.global_step, {f"valid/avg_{m}": v for m, v in averages.items()})
            self._print(f"Validation metrics appended to {csv_path}")
            if epoch >= 0 and self.args.save_weights_every_epoch:
                path = every_epoch_checkpoint_path(self.results_path, epoch, averages)
                self._print(f"Store weights: {path}")
                self.save_checkpoint(path)
        value = float(self.dist.broadcast(value))
        if epoch < 0 or math.isnan(value):
            s.epoch_validated = True
            if epoch >= 0:
                self.save_last()
            return
        higher_better = METRIC_DIRECTIONS[self.metric]
        score = value if higher_better else -value
        best_score = s.best_metric if higher_better else -s.best_metric
        if s.best_metric == -math.inf or score > best_score:
            s.best_metric = value
            s.epoch_validated = True
            if self.dist.is_main:
                per_stem = None
                if self.args.each_metrics_in_name:
                    per_stem = {stem: [sc.value(self.metric) for sc in result.scores if sc.stem == stem]
                                for stem in dict.fromkeys(sc.stem for sc in result.scores)}
                path = best_checkpoint_path(self.results_path, epoch, self.metric, value, per_stem)
                self._print(f"Store weights: {path}")
                self.save_checkpoint(path)
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(score)
        s.epoch_validated = True
        self.save_last()

    def _print_summary(self, seconds: float) -> None:
        s = self.state
        counters = ", ".join(f"{n.replace('_', ' ')}: {v}" for n, v in zip(COUNTER_NAMES, s.data_counters))
        self._print(
            f"Done: {s.global_step} optimizer steps, {s.nonfinite_skipped} non-finite batches skipped, "
            f"{seconds:.1f} s this session.\nData: {counters}; "
            f"files skipped at start: {len(getattr(self.dataset.report, 'skipped', []))}.\n"
            f"Best {self.metric}: {s.best_metric:.4f}. Last checkpoint: {last_checkpoint_path(self.results_path)}"
        )

    def close(self) -> None:
        self.dist.close()
