"""Which models the page offers, and the loaded ``Separator`` kept between requests.

Offered with no arguments: every shipped config, and the checkpoints the main command
(``python -m bsmamba2_plugin.train``) writes to ``results/bsmamba2_demo/``; a config and a checkpoint
given on the command line come first. Users pick among these only: a page never names a server path.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsmamba2_plugin.shipped_configs import shipped_config
# what `python -m bsmamba2_plugin.train` trains with no arguments, and where
from bsmamba2_plugin.train.cli import DEMO_CONFIG_NAME as DEMO_CONFIG
from bsmamba2_plugin.train.cli import DEMO_RESULTS

SHIPPED_CONFIGS = ("bsmamba2_vocals_small.yaml", "bsmamba2_vocals_paper.yaml", "bsmamba2_4stems.yaml")
RANDOM_WEIGHTS = "random weights (no checkpoint)"
HOW_TO_GET_A_CHECKPOINT = (
    "No trained checkpoint found in {folder}. Run `python -m bsmamba2_plugin.train` in this folder "
    "(about a minute on a CPU) to train the small demo model, or start the app with "
    "`--config_path C --start_check_point K` for your own (any MSST, plain or Lightning checkpoint). "
    "With random weights the output is not a separation."
)
_BEST = re.compile(r"_(sdr|csdr|leakage)_(-?[0-9.]+)\.ckpt$")


@dataclass(frozen=True)
class ModelChoices:
    """Labels shown in the page mapped to server paths (None: random weights)."""

    configs: dict[str, Path]
    checkpoints: dict[str, Path | None]
    default_config: str
    default_checkpoint: str
    notice: str  # shown under the model choice when there is something to say, else ''


def _demo_checkpoints(folder: Path) -> list[Path]:
    """Best checkpoints first (higher sdr/csdr, lower leakage), then ``last_*.ckpt``."""
    if not folder.is_dir():
        return []
    best, last = [], []
    for path in sorted(folder.glob("*.ckpt")):
        match = _BEST.search(path.name)
        if match:
            value = float(match.group(2))
            best.append((value if match.group(1) == "leakage" else -value, path))
        elif path.name.startswith("last_"):
            last.append(path)
    return [path for _, path in sorted(best)] + last


def find_model_choices(config_path: str | None = None, checkpoint: str | None = None,
                       demo_results: Path = DEMO_RESULTS) -> ModelChoices:
    configs: dict[str, Path] = {}
    checkpoints: dict[str, Path | None] = {}
    if config_path:
        path = Path(config_path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--config_path {config_path}: no such file")
        configs[f"{path.name} (command line)"] = path
    if checkpoint:
        path = Path(checkpoint).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--start_check_point {checkpoint}: no such file")
        checkpoints[f"{path.name} (command line)"] = path
    for name in SHIPPED_CONFIGS:
        configs[f"{name} (shipped)"] = shipped_config(name)
    demo = _demo_checkpoints(Path(demo_results))
    for path in demo:
        checkpoints[f"{path.name} ({demo_results}, {DEMO_CONFIG})"] = path.resolve()
    checkpoints[RANDOM_WEIGHTS] = None
    default_config = next(iter(configs)) if config_path else f"{DEMO_CONFIG} (shipped)"
    default_checkpoint = next(iter(checkpoints))
    notice = ""
    if not checkpoint and not demo:
        notice = HOW_TO_GET_A_CHECKPOINT.format(folder=demo_results)
    return ModelChoices(configs, checkpoints, default_config, default_checkpoint, notice)


def engine_options(precision: str, use_tta: bool, num_overlap: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Separator keywords, separate_file keywords) for the options that differ from the defaults.

    Defaults are left out, so the config's own ``inference`` values (and the engine's) apply.
    """
    constructor = {} if precision == "auto" else {"precision": precision}
    per_call: dict[str, Any] = {}
    if use_tta:
        per_call["use_tta"] = True
    if num_overlap is not None:
        per_call["num_overlap"] = int(num_overlap)
    return constructor, per_call


class SeparatorCache:
    """Keeps the last loaded Separator (loading the paper model takes seconds); thread-safe."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._separator = None
        self._lock = threading.Lock()

    def get(self, config: Path, checkpoint: Path | None, device: str, constructor: dict[str, Any]):
        from bsmamba2_plugin.separate import Separator

        key = (str(config), str(checkpoint), device, tuple(sorted(constructor.items())))
        with self._lock:
            if key != self._key:
                self._separator, self._key = None, None  # free the old model before loading the new one
                self._separator = Separator(str(config), str(checkpoint) if checkpoint else None,
                                            device=device, **constructor)
                self._key = key
            return self._separator


def device_choices() -> list[str]:
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return choices
