"""TensorBoard scalars (losses, learning rate, gradient norm, validation metrics).

TensorBoard is optional: the `tensorboard` package only writes and shows the event files,
and pulls grpcio/protobuf/werkzeug that a separation-only install does not need. Without
it, training runs the same and says once how to get the logs (`pip install tensorboard`,
or `pip install bsmamba2-plugin[train]`).
"""
from __future__ import annotations

import math
from pathlib import Path


class ScalarLog:
    def __init__(self, folder: Path, enabled: bool = True):
        self.writer = None
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
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None and not math.isnan(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
