"""Python API: ``separate_track`` for an array in memory, ``Separator`` holding a loaded model."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bsmamba2_plugin.separate.chunk_plan import InferenceSettings
from bsmamba2_plugin.separate.msst_demix import as_mixture_array, demix
from bsmamba2_plugin.separate.device import resolve_device
from bsmamba2_plugin.separate.file_separation import FileJob, model_sample_rate, separate_file, wants_normalization
from bsmamba2_plugin.separate.output_naming import DEFAULT_TEMPLATE, OutputFormat
from bsmamba2_plugin.separate.resampling import resample_array

MAX_CHANNELS_GUESS = 8  # a first axis longer than this and a short second one is a transposed array


def _mixture_channels_first(mixture: Any, downmix: bool) -> np.ndarray:
    array = as_mixture_array(mixture)
    if array.shape[0] > MAX_CHANNELS_GUESS and array.shape[1] <= MAX_CHANNELS_GUESS:
        raise ValueError(
            f"mixture shaped {array.shape} looks like (samples, channels); pass (channels, samples), "
            f"e.g. soundfile's data.T"
        )
    if not np.isfinite(array).all():
        raise ValueError("mixture contains NaN or infinite samples")
    if array.shape[0] > 2:
        if not downmix:
            raise ValueError(
                f"mixture has {array.shape[0]} channels; the model takes mono or stereo "
                f"(pass downmix=True to average all channels into mono)"
            )
        array = array.mean(axis=0, keepdims=True)
    return array


def _model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def separate_track(
    model: torch.nn.Module,
    mixture: Any,
    sample_rate: int,
    config: Any,
    *,
    device: torch.device | str | None = None,
    downmix: bool = False,
    extract_instrumental: bool = False,
) -> dict[str, np.ndarray]:
    """Separate an in-memory mixture (channels, samples) at any ``sample_rate``.

    Returns {stem: (channels, samples) float32} at ``sample_rate`` and the input's length. The
    mixture is converted to ``audio.sample_rate`` (soxr) and back; MSST's ``inference.normalize``
    is honoured; chunking is MSST's ``demix``. ``device`` defaults to where the model is.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    array = _mixture_channels_first(mixture, downmix)
    device = _model_device(model) if device is None else resolve_device(device)
    rate = model_sample_rate(config)
    at_model_rate = resample_array(array, sample_rate, rate)
    scale = None
    if wants_normalization(config):
        mono = at_model_rate.astype(np.float64).mean(axis=0)
        mean, std = float(mono.mean()), float(mono.std())
        if std > 0:
            scale = (mean, std)
            at_model_rate = ((at_model_rate - mean) / std).astype(np.float32)
    stems = demix(model, at_model_rate, config, device)
    result = {}
    for name, stem in stems.items():
        if scale is not None:
            stem = (stem * scale[1] + scale[0]).astype(np.float32)
        result[name] = resample_array(stem, rate, sample_rate, length=array.shape[1])
    if extract_instrumental:
        source = "vocals" if "vocals" in result else next(iter(result))
        result["instrumental"] = array - result[source]
    return result


@dataclass
class FolderReport:
    written: dict[str, dict[str, Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def list_inputs(input_path: Path) -> list[Path]:
    """A single file, or every file under a folder (recursively, sorted), as MSST collects them."""
    if input_path.is_file():
        return [input_path]
    if not input_path.is_dir():
        raise FileNotFoundError(f"input {input_path} is neither a file nor a folder")
    return sorted(p for p in input_path.rglob("*") if p.is_file() and not p.name.startswith("."))


class Separator:
    """A loaded BSMamba2 model and its MSST config, ready for many files or arrays.

    ``Separator("config.yaml", "model.ckpt", device="auto")`` or ``Separator(config, model=model)``.
    """

    def __init__(
        self,
        config: Any,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        model: torch.nn.Module | None = None,
    ):
        from bsmamba2_plugin.checkpoint import load_model
        from bsmamba2_plugin.config import load_config

        self.config = load_config(config) if isinstance(config, (str, os.PathLike)) else config
        self.device = resolve_device(device)
        self.settings = InferenceSettings.from_config(self.config)
        self.sample_rate = model_sample_rate(self.config)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if model is None:
            model = load_model(self.config, checkpoint, device="cpu")
        elif checkpoint is not None:
            raise ValueError("pass either model= or checkpoint, not both")
        self.model = model.to(self.device).eval()

    @property
    def instruments(self) -> list[str]:
        return list(self.settings.instruments)

    def separate(self, mixture: Any, sample_rate: int, **options: Any) -> dict[str, np.ndarray]:
        return separate_track(self.model, mixture, sample_rate, self.config, device=self.device, **options)

    def separate_file(
        self,
        input_path: str | os.PathLike[str],
        store_dir: str | os.PathLike[str],
        *,
        relative_input: Path | None = None,
        filename_template: str = DEFAULT_TEMPLATE,
        output_format: OutputFormat | None = None,
        extract_instrumental: bool = False,
        downmix: bool = False,
        model_type: str = "bsmamba2",
        progress: Callable[[int, int], None] | None = None,
        start_time: int | None = None,
    ) -> dict[str, Path]:
        input_path = Path(input_path)
        job = FileJob(
            store_dir=Path(store_dir),
            relative_input=relative_input or Path(input_path.name),
            filename_template=filename_template,
            output_format=output_format or OutputFormat(),
            extract_instrumental=extract_instrumental,
            downmix=downmix,
            model_type=model_type,
            model_name=self.checkpoint.stem if self.checkpoint else "",
            start_time=int(time.time()) if start_time is None else start_time,
        )
        return separate_file(self.model, self.config, input_path, job, self.device, progress)

    def separate_folder(
        self,
        input_path: str | os.PathLike[str],
        store_dir: str | os.PathLike[str],
        on_file: Callable[[Path], Callable[[int, int], None] | None] | None = None,
        **options: Any,
    ) -> FolderReport:
        """Every file under ``input_path``; a failing file is recorded and the rest still run."""
        input_path = Path(input_path)
        root = input_path if input_path.is_dir() else input_path.parent
        report = FolderReport()
        start_time = int(time.time())
        for path in list_inputs(input_path):
            progress = on_file(path) if on_file is not None else None
            try:
                report.written[str(path)] = self.separate_file(
                    path, store_dir, relative_input=path.relative_to(root), progress=progress,
                    start_time=start_time, **options,
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # noqa: BLE001 - one broken file must not stop the folder
                report.failed[str(path)] = f"{type(error).__name__}: {error}"
        return report
