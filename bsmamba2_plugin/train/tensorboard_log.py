"""TensorBoard scalars (losses, learning rate, gradient norm, validation metrics), and the same
scalars to Weights & Biases with MSST's --wandb_key / --wandb_offline.

TensorBoard is optional: the `tensorboard` package only writes and shows the event files,
and pulls grpcio/protobuf/werkzeug that a separation-only install does not need. Without
it, training runs the same and says once how to get the logs (`pip install tensorboard`,
or `pip install bsmamba2-plugin[train]`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import TrainingConfigError


def open_wandb(key: str, offline: bool, folder: Path, run_config: dict[str, Any]) -> Any:
    """MSST's wandb_init: project "msst", offline with --wandb_offline, online after login with --wandb_key;
    None when neither is given (MSST then runs wandb disabled)."""
    if not offline and not (key or "").strip():
        return None
    try:
        import wandb
    except Exception as error:  # noqa: BLE001
        raise TrainingConfigError(
            f"--wandb_key / --wandb_offline need wandb ({error}): pip install \"bsmamba2-plugin[wandb]\"") from error
    folder.mkdir(parents=True, exist_ok=True)
    if offline:
        return wandb.init(mode="offline", project="msst", dir=str(folder), config=run_config)
    wandb.login(key=key.strip())
    return wandb.init(project="msst", dir=str(folder), config=run_config)


class ScalarLog:
    def __init__(self, folder: Path, enabled: bool = True, wandb_run: Any = None):
        self.writer = None
        self.wandb_run = wandb_run  # independent of TensorBoard (--no_tensorboard)
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("TensorBoard logging is off: `pip install tensorboard` to get it", flush=True)
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        finite = {tag: float(v) for tag, v in values.items() if v is not None and not math.isnan(v)}
        if self.wandb_run is not None and finite:
            self.wandb_run.log(finite, step=step)
        if self.writer is None:
            return
        for tag, value in finite.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
