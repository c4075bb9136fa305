"""`python -m bsmamba2_plugin.train`: MSST's train.py command line, for BSMamba2.

With no arguments: the small vocals config on the built-in generated demo dataset.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bsmamba2_plugin.checkpoint import CheckpointError
from bsmamba2_plugin.config import ConfigError
from bsmamba2_plugin.metrics import METRIC_NAMES
from bsmamba2_plugin.shipped_configs import shipped_config

from .errors import NonFiniteLossError, TrainingConfigError, TrainingDataError
from .loss import COEF_DEFAULTS, MSST_LOSSES

DEMO_CONFIG_NAME = "bsmamba2_vocals_small.yaml"
DEMO_RESULTS = Path("results") / "bsmamba2_demo"

# MSST train.py options this trainer does not implement, and why.
MSST_ONLY_FLAGS = {
    "--safe_mode": "errors are never silently skipped (non-finite losses are counted and reported instead)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bsmamba2_plugin.train",
        description="Train BSMamba2 on MSST datasets with MSST configs; checkpoints load in MSST. "
                    "With no arguments: a short demo on a generated dataset with configs/bsmamba2_vocals_small.yaml.",
    )
    msst = p.add_argument_group("MSST train.py flags (same meaning)")
    msst.add_argument("--model_type", default=None, help="must be bsmamba2 (training.model_type wins, as in MSST)")
    msst.add_argument("--config_path", help="MSST YAML config")
    msst.add_argument("--start_check_point", default="", help="initial weights (any MSST/Lightning/plain layout)")
    for name in ("optimizer", "scheduler", "epoch", "best_metric", "all_metrics", "all_losses"):
        msst.add_argument(f"--load_{name}", action="store_true", help=f"also take {name} from --start_check_point")
    msst.add_argument("--results_path", help="folder for checkpoints, CSV and TensorBoard logs")
    msst.add_argument("--data_path", nargs="+", help="training folders of <track>/<instrument>.wav|.flac")
    msst.add_argument("--dataset_type", type=int, default=1,
                      help="1 random mix, 4 aligned (built in); others through the msst package")
    msst.add_argument("--valid_path", nargs="+", help="validation folders of <track>/mixture.wav + stems")
    msst.add_argument("--num_workers", type=int, default=0)
    msst.add_argument("--pin_memory", action="store_true")
    msst.add_argument("--persistent_workers", action="store_true")
    msst.add_argument("--prefetch_factor", type=int, default=None)
    msst.add_argument("--seed", type=int, default=0)
    msst.add_argument("--device_ids", nargs="+", type=int, default=[0],
                      help="GPU id; for several GPUs launch with torchrun (one process per GPU)")
    msst.add_argument("--pre_valid", action="store_true", help="validate before training")
    msst.add_argument("--metrics", nargs="+", default=["sdr"], choices=METRIC_NAMES,
                      help="validation metrics: MSST's list plus csdr and leakage (sdr, csdr and leakage are "
                           "always computed)")
    msst.add_argument("--metric_for_scheduler", default="sdr", choices=METRIC_NAMES,
                      help="selects the best checkpoint and drives ReduceLROnPlateau (leakage: lower is better)")
    msst.add_argument("--loss", nargs="+", default=None, choices=MSST_LOSSES,
                      help="MSST's losses, summed (default: the paper's loss; MSST's own default is masked_loss)")
    for name in MSST_LOSSES:
        msst.add_argument(f"--{name}_coef", type=float, default=COEF_DEFAULTS[name], help=argparse.SUPPRESS)
    msst.add_argument("--use_standard_loss", action="store_true",
                      help="train with --loss (default masked_loss) instead of the paper's loss")
    msst.add_argument("--freeze_layers", nargs="+", default=None,
                      help="parameter-name prefixes to freeze (requires_grad False)")
    msst.add_argument("--load_only_compatible_weights", action="store_true",
                      help="--start_check_point: load the weights whose name and shape fit, list the others")
    msst.add_argument("--save_weights_every_epoch", action="store_true",
                      help="also write model_bsmamba2_ep_N_<metric>_<value>....ckpt after every validation")
    msst.add_argument("--each_metrics_in_name", action="store_true",
                      help="best checkpoint names carry every stem's mean and std of --metric_for_scheduler")
    msst.add_argument("--train_lora_loralib", action="store_true",
                      help="LoRA with the config's lora: section (r, lora_alpha); checkpoints hold merged weights")
    msst.add_argument("--lora_checkpoint_loralib", default="",
                      help="start the LoRA adapters from this file (lora_state_dict of an earlier run)")
    msst.add_argument("--train_lora_peft", action="store_true",
                      help="LoRA through peft: LoraConfig(**lora:) (lora.target_modules required); checkpoints hold "
                           "merged weights, the adapter goes beside each as a peft folder <checkpoint>_lora_ (MSST's name)")
    msst.add_argument("--lora_checkpoint_peft", default="",
                      help="start from this peft adapter folder (PeftModel.from_pretrained, LoRA trainable)")
    msst.add_argument("--wandb_key", default="", help="log to Weights & Biases (project msst) with this API key")
    msst.add_argument("--wandb_offline", action="store_true", help="log to a local wandb run under --results_path")
    msst.add_argument("--set_per_process_memory_fraction", action="store_true",
                      help="CUDA: torch.cuda.set_per_process_memory_fraction(1.0), as MSST")
    own = p.add_argument_group("bsmamba2_plugin.train flags")
    own.add_argument("--save_every_steps", type=int, default=100,
                     help="also write last_bsmamba2.ckpt every N optimizer steps (0: only at epoch ends)")
    own.add_argument("--fresh", action="store_true",
                     help="ignore last_bsmamba2.ckpt in --results_path and start over (default: resume from it)")
    own.add_argument("--max_nonfinite_in_row", type=int, default=20,
                     help="stop after this many non-finite losses or gradients in a row")
    own.add_argument("--force_cpu", action="store_true", help="train on CPU even when CUDA is available")
    own.add_argument("--compile", action="store_true",
                     help="run the model's layers through torch.compile for training, as training.compile: true "
                          "does (compiles on the first step; see README)")
    own.add_argument("--no_tensorboard", action="store_true")
    own.add_argument("--no_progress", action="store_true", help="no progress bars")
    own.add_argument("--demo_data_dir", default=None,
                     help="where the demo dataset is cached (default ~/.cache/bsmamba2_plugin or $BSMAMBA2_CACHE)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    for flag, reason in MSST_ONLY_FLAGS.items():
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            parser.error(f"{flag} is an MSST train.py option that bsmamba2_plugin.train does not implement: {reason}")
    args = parser.parse_args(argv)
    if args.metric_for_scheduler not in args.metrics:  # as MSST's parse_args_train
        args.metrics = [*args.metrics, args.metric_for_scheduler]
    if args.config_path is None and args.data_path is None:
        args.demo = True
        try:
            demo_config = shipped_config(DEMO_CONFIG_NAME)
        except FileNotFoundError as error:
            parser.error(f"{error}; pass --config_path and --data_path")
        from .demo_data import ensure_demo_dataset

        started = time.time()
        root = ensure_demo_dataset(args.demo_data_dir)
        print(f"Demo: {demo_config.name} on the generated dataset in {root} ({time.time() - started:.1f} s)",
              flush=True)
        args.config_path = str(demo_config)
        args.data_path = [str(root / "train")]
        args.valid_path = args.valid_path or [str(root / "valid")]
        args.results_path = args.results_path or str(DEMO_RESULTS)
    else:
        args.demo = False
        missing = [f for f, v in (("--config_path", args.config_path), ("--data_path", args.data_path),
                                  ("--results_path", args.results_path)) if not v]
        if missing:
            parser.error(f"{' and '.join(missing)} required (or pass no arguments at all for the demo run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .trainer import Trainer

    trainer = None
    try:
        try:
            trainer = Trainer(args)
        except ValueError as error:  # a value refused while setting up: one line, as the trainer's own errors
            raise TrainingConfigError(str(error)) from error
        trainer.run()
    except (TrainingDataError, TrainingConfigError, ConfigError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        if trainer is not None:
            trainer.close()
    return 0
