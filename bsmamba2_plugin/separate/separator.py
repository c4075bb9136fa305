"""The separation engine's front: ``Separator`` (a loaded model and its settings), ``separate_track``
for an array, ``demix`` (MSST's function), folders, and fixed-latency streaming.

Every path runs the same steps: input pipeline (`audio_pipeline`) -> passes for TTA / bigshifts
(`passes`) -> chunking and overlap-add (`overlap_add`) around the model call (`model_runner`) ->
output pipeline -> a writer (files: `stem_writer`; arrays in memory).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bsmamba2_plugin.separate.audio_input import AudioInputError, open_audio
from bsmamba2_plugin.separate.audio_pipeline import ArraySource, StemArrays, StemOutput, prepare_input
from bsmamba2_plugin.separate.device import resolve_device
from bsmamba2_plugin.separate.model_runner import ModelRunner
from bsmamba2_plugin.separate.output_naming import DEFAULT_TEMPLATE, FileJob, OutputFormat, check_template
from bsmamba2_plugin.separate.overlap_add import ChunkSchedule, OverlapAdd, stream_source
from bsmamba2_plugin.separate.passes import msst_passes, run_passes
from bsmamba2_plugin.separate.stem_writer import StemFiles, WithSpectrograms
from bsmamba2_plugin.settings import InferenceSettings

MAX_CHANNELS_GUESS = 8  # a first axis longer than this and a short second one is a transposed array
Progress = Callable[[int, int], None]


def mixture_array(mixture: Any) -> np.ndarray:
    """(channels, samples) float32 from a numpy array or tensor (1-D means mono), checked once."""
    if isinstance(mixture, torch.Tensor):
        mixture = mixture.detach().cpu().numpy()
    array = np.asarray(mixture, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"mixture must be shaped (channels, samples) or (samples,); got {array.shape}")
    if array.shape[1] == 0:
        raise ValueError("mixture has no samples")
    if array.shape[0] > MAX_CHANNELS_GUESS and array.shape[1] <= MAX_CHANNELS_GUESS:
        raise ValueError(f"mixture shaped {array.shape} looks like (samples, channels); pass (channels, samples), "
                         f"e.g. soundfile's data.T")
    if not np.isfinite(array).all():
        raise ValueError("mixture contains NaN or infinite samples")
    return array


def _model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _instrumental_source(names: list[str], extract: bool) -> str | None:
    if not extract:
        return None
    if "instrumental" in names:
        raise ValueError("--extract_instrumental: the model already has an 'instrumental' stem")
    return "vocals" if "vocals" in names else names[0]


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
    ``config`` may be an MSST YAML, an official run's hparams.yaml or its run folder (then its
    weights/*.ckpt is the checkpoint). ``precision``, ``use_tta``, ``bigshifts``, ``num_overlap``
    and ``batch_size`` set this separator's defaults (None: as the config says);
    ``separate``/``separate_file`` take the last four per call too. ``weights``: auto, raw or ema
    (for checkpoints holding both).
    """

    def __init__(
        self,
        config: Any,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        model: torch.nn.Module | None = None,
        *,
        precision: str | None = None,
        use_tta: bool | None = None,
        bigshifts: int | None = None,
        num_overlap: int | None = None,
        batch_size: int | None = None,
        weights: str = "auto",
    ):
        from bsmamba2_plugin.checkpoint import find_run_checkpoint, load_model
        from bsmamba2_plugin.config import load_config
        from bsmamba2_plugin.config_keys import warn_unused_keys
        from bsmamba2_plugin.model.projection import requested_cpu_gemm
        from bsmamba2_plugin.precision import resolve_precision

        if isinstance(config, (str, os.PathLike)):
            if Path(config).is_dir() and checkpoint is None and model is None:
                checkpoint = find_run_checkpoint(config)  # an official run folder: its weights/*.ckpt
            self.config = load_config(config)
            # a config object's owner (the trainer, a script) reads it and answers for its keys
            warn_unused_keys(self.config, str(config))
        else:
            self.config = config
        self.device = resolve_device(device)
        self.settings = InferenceSettings.from_config(
            self.config, precision=precision, use_tta=use_tta, bigshifts=bigshifts, num_overlap=num_overlap,
            batch_size=batch_size)
        self.precision = resolve_precision(self.settings.precision, self.device, self.settings.use_amp)
        requested_cpu_gemm()  # a wrong BSMAMBA2_CPU_GEMM fails here, with the other setup errors
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if model is None:
            model = load_model(self.config, checkpoint, device="cpu", weights=weights)
        elif checkpoint is not None:
            raise ValueError("pass either model= or checkpoint, not both")
        self.model = model.to(self.device).eval()

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def instruments(self) -> list[str]:
        return list(self.settings.instruments)

    # -- the engine --------------------------------------------------------------------------

    def _separate_source(self, source: Any, settings: InferenceSettings, emit: Callable[[np.ndarray], None],
                         schedule: ChunkSchedule | None = None, workdir: Path | None = None,
                         progress: Progress | None = None) -> None:
        """``source`` at the model's rate -> averaged estimate blocks (stems, channels, n) to ``emit``."""
        runner = ModelRunner(self.model, settings, self.device, self.precision)
        runner.check_channels(source.channels)
        schedule = schedule or ChunkSchedule.msst(settings.chunk_size, settings.num_overlap, settings.batch_size)
        passes = msst_passes(source.frames, settings.bigshifts, settings.use_tta)
        total = source.frames * len(passes)
        done = [0]

        def count(samples: int) -> None:
            done[0] += samples
            if progress is not None:
                progress(done[0], total)

        def separate_pass(view: Any, emit_block: Callable[[np.ndarray], None]) -> None:
            core = OverlapAdd(schedule, runner, view.channels, len(settings.instruments), self.device, count)
            stream_source(core, view, emit_block)

        run_passes(source, passes, separate_pass, emit, len(settings.instruments), source.channels, workdir)

    def demix(self, mixture: Any, **options: Any) -> dict[str, np.ndarray]:
        """MSST's ``demix``: the mixture at the model's rate, no resampling or normalisation."""
        settings = self.settings.with_options(**options)
        array = mixture_array(mixture)
        blocks: list[np.ndarray] = []
        self._separate_source(ArraySource(array), settings, blocks.append)
        stems = np.concatenate(blocks, axis=-1)
        return {name: stems[k] for k, name in enumerate(settings.instruments)}

    def separate(
        self,
        mixture: Any,
        sample_rate: int,
        *,
        downmix: bool = False,
        extract_instrumental: bool = False,
        segment_seconds: float | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> dict[str, np.ndarray]:
        """Separate an in-memory mixture (channels, samples) at any ``sample_rate``.

        Returns {stem: (channels, samples) float32} at ``sample_rate`` and the input's length.
        ``segment_seconds``: the paper's input-length study instead of overlap-add, each
        segment one independent model input; only whole segments are separated and returned.
        """
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        sample_rate = int(sample_rate)
        settings = self.settings.with_options(**options)
        array = mixture_array(mixture)
        prepared = prepare_input(ArraySource(array, sample_rate), sample_rate, settings.sample_rate,
                                 settings.normalize, downmix=downmix)
        schedule = None
        length = array.shape[1]
        if segment_seconds is not None:
            # the instrumental reads the mixture only as far as the stems go, so it needs no cut
            schedule, prepared.model_input = self._segments(prepared.model_input, settings, segment_seconds)
            length = round(prepared.model_input.frames * sample_rate / settings.sample_rate)
        names = list(settings.instruments)
        instrumental = _instrumental_source(names, extract_instrumental)
        writer = StemArrays(names + (["instrumental"] if instrumental else []), prepared.mixture.channels)
        output = StemOutput(writer, names, prepared, settings.sample_rate, length, instrumental)
        self._separate_source(prepared.model_input, settings, output.write, schedule, progress=progress)
        return output.finish()

    @staticmethod
    def _segments(source: Any, settings: InferenceSettings, seconds: float) -> tuple[ChunkSchedule, Any]:
        segment = int(round(seconds * settings.sample_rate))
        if segment < 1:
            raise ValueError(f"segment of {seconds} s is shorter than one sample at {settings.sample_rate} Hz")
        count = source.frames // segment
        if count == 0:
            raise ValueError(f"the track is shorter than one {seconds:g} s segment")
        data = source.read(0, count * segment)
        return ChunkSchedule.segments(segment, settings.batch_size), ArraySource(np.ascontiguousarray(data))

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
        draw_spectro: float = 0,
        progress: Progress | None = None,
        start_time: int | None = None,
        **options: Any,
    ) -> dict[str, Path]:
        """Separate one file into stem files under ``store_dir``; returns {stem: path}.

        Memory is bounded by the chunk size, not the length: the file is read and the stems
        written block by block, extra passes summed in a temporary file; outputs appear
        atomically. ``progress(done, total)`` counts model-rate samples over every pass.
        """
        settings = self.settings.with_options(**options)
        input_path = Path(input_path)
        job = FileJob(
            store_dir=Path(store_dir), relative_input=relative_input or Path(input_path.name),
            filename_template=filename_template, output_format=output_format or OutputFormat(),
            model_type=model_type, model_name=self.checkpoint.stem if self.checkpoint else "",
            start_time=int(time.time()) if start_time is None else start_time,
        )
        names = list(settings.instruments)
        instrumental = _instrumental_source(names, extract_instrumental)
        paths = job.stem_paths(names + (["instrumental"] if instrumental else []))
        subtype = job.output_format.subtype
        if draw_spectro < 0:
            raise ValueError(f"draw_spectro must be 0 (off) or a number of seconds, got {draw_spectro}")

        with tempfile.TemporaryDirectory(prefix="bsmamba2-separate-") as workdir:
            original = open_audio(input_path, workdir)
            prepared = None
            try:
                prepared = prepare_input(original, original.sample_rate, settings.sample_rate, settings.normalize,
                                         downmix=downmix, workdir=Path(workdir), name=str(input_path))
                writer: Any = StemFiles(paths, original.sample_rate, prepared.mixture.channels, subtype,
                                        job.output_format.file_format)
                if draw_spectro:
                    writer = WithSpectrograms(writer, paths, original.sample_rate, draw_spectro)
                output = StemOutput(writer, names, prepared, settings.sample_rate, original.frames, instrumental)
                try:
                    self._separate_source(prepared.model_input, settings, output.write, workdir=Path(workdir),
                                          progress=progress)
                    return output.finish()
                except BaseException:
                    output.abort()
                    raise
            finally:
                if prepared is not None:
                    prepared.close()
                original.close()

    def separate_folder(
        self,
        input_path: str | os.PathLike[str],
        store_dir: str | os.PathLike[str],
        on_file: Callable[[Path], Progress | None] | None = None,
        **options: Any,
    ) -> FolderReport:
        """Every file under ``input_path``; a failing file is recorded and the rest still run (a
        filename_template that fails for any file raises first)."""
        check_template(options.get("filename_template", DEFAULT_TEMPLATE))
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

    def stream(self, channels: int) -> StreamingSeparator:
        return StreamingSeparator(self, channels)


class StreamingSeparator:
    """Fixed-latency separation of audio pushed in blocks of any size, at the model's rate.

    The core with ``batch_size = 1`` (so the latency is one chunk, not a batch), which is exactly
    MSST's ``demix`` with batch_size 1. A sample's output leaves at most ``latency_samples`` after
    it arrived (``max(chunk, 2 * border + 1)``), plus compute time. TTA and bigshifts need the whole
    signal and are refused here.
    """

    def __init__(self, separator: Separator, channels: int):
        settings = separator.settings.with_options(batch_size=1)
        if settings.passes != 1:
            raise ValueError("streaming separation cannot use TTA or bigshifts (they need the whole signal)")
        self.settings = settings
        runner = ModelRunner(separator.model, settings, separator.device, separator.precision)
        runner.check_channels(channels)
        self.schedule = ChunkSchedule.msst(settings.chunk_size, settings.num_overlap, 1)
        self.core = OverlapAdd(self.schedule, runner, channels, len(settings.instruments), separator.device)
        self.channels = channels

    @property
    def latency_samples(self) -> int:
        return self.schedule.latency

    @property
    def chunk(self) -> int:
        return self.schedule.chunk

    @property
    def step(self) -> int:
        return self.schedule.step

    @property
    def received(self) -> int:
        return self.core.received

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)  # the core checks the shape
        if not np.isfinite(block).all():
            raise ValueError("audio block contains NaN or infinite samples")
        return self.core.push(block)

    def finish(self) -> np.ndarray:
        return self.core.finish()


def separate_track(
    model: torch.nn.Module,
    mixture: Any,
    sample_rate: int,
    config: Any,
    *,
    device: torch.device | str | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """``Separator(config, model=model).separate(mixture, sample_rate, ...)``; ``device`` defaults
    to where the model is. Options: downmix, extract_instrumental, precision, use_tta, bigshifts,
    num_overlap, batch_size, segment_seconds, progress."""
    construct = {k: options.pop(k) for k in ("precision",) if k in options}
    separator = Separator(config, model=model, device=_model_device(model) if device is None else device, **construct)
    return separator.separate(mixture, sample_rate, **options)


def demix(model: torch.nn.Module, mixture: Any, config: Any, device: torch.device | str = "cpu",
          **options: Any) -> dict[str, np.ndarray]:
    """Separate ``mixture`` (channels, samples) into {instrument: (channels, samples) float32}.

    Same chunking, windowing, batching, border handling and precision as MSST's ``demix`` (generic
    branch): float32, or float16 autocast on CUDA with ``training.use_amp``; bit for bit on the CPU.
    The model must already be on ``device``.
    """
    from bsmamba2_plugin.precision import Precision

    training = model.training
    try:
        separator = Separator(config, model=model, device=device, precision="fp32")
        if separator.device.type == "cuda" and separator.settings.use_amp:  # MSST: torch.cuda.amp.autocast
            separator.precision = Precision("fp16", torch.float16, "fp16 autocast, as MSST's demix on CUDA")
        return separator.demix(mixture, **options)
    finally:
        model.train(training)  # MSST's demix leaves the model's mode alone


__all__ = ["AudioInputError", "FolderReport", "Separator", "StreamingSeparator", "demix", "list_inputs",
           "mixture_array", "separate_track"]
