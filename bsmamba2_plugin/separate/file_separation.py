"""Separating one audio file into stem files with memory bounded by the chunk size, not the length.

Steps: open (libsndfile, or an ffmpeg decode to a temporary file); adapt channels (mono stays mono,
more than two is an error unless downmixing); convert to the model's rate into a temporary float
WAV if needed; optional MSST normalisation (one statistics pass); chunked separation; stems
converted back to the input's rate and written block by block; files replaced atomically.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bsmamba2_plugin.separate.audio_input import (
    AudioInputError,
    DownmixSource,
    ScaledSource,
    mono_mix_statistics,
    open_audio,
)
from bsmamba2_plugin.separate.chunk_plan import InferenceSettings
from bsmamba2_plugin.separate.output_naming import DEFAULT_TEMPLATE, OutputFormat, output_path, template_fields
from bsmamba2_plugin.separate.overlap_add import separate_blocks
from bsmamba2_plugin.separate.resampling import resample_to_file
from bsmamba2_plugin.separate.stem_writer import StemFilesSink


def model_sample_rate(config: Any) -> int:
    """``audio.sample_rate`` as MSST reads it (44100 when absent)."""
    audio = config["audio"] if "audio" in config else {}
    rate = audio.get("sample_rate", 44100) if hasattr(audio, "get") else getattr(audio, "sample_rate", 44100)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"audio.sample_rate must be a positive integer, got {rate!r}")
    return rate


def wants_normalization(config: Any) -> bool:
    inference = config["inference"]
    return bool(inference.get("normalize", False)) if hasattr(inference, "get") else False


@dataclass
class FileJob:
    """Where one file's stems go and in which format."""

    store_dir: Path
    relative_input: Path
    filename_template: str = DEFAULT_TEMPLATE
    output_format: OutputFormat = field(default_factory=OutputFormat)
    extract_instrumental: bool = False
    downmix: bool = False
    model_type: str = "bsmamba2"
    model_name: str = ""
    start_time: int = 0


def _stem_paths(job: FileJob, names: list[str]) -> dict[str, Path]:
    paths = {}
    for name in names:
        fields = template_fields(job.relative_input, name, job.model_type, job.model_name, job.start_time)
        paths[name] = output_path(job.filename_template, job.store_dir, job.output_format.extension, fields)
    if len(set(paths.values())) != len(paths):
        raise ValueError(
            f"filename_template {job.filename_template!r} maps several stems to the same file; include {{instr}}"
        )
    return paths


def separate_file(
    model: torch.nn.Module,
    config: Any,
    input_path: str | os.PathLike[str],
    job: FileJob,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Separate ``input_path`` into files under ``job.store_dir``; returns {stem: path}.

    ``progress(done, total)`` is called as model-rate samples are finished.
    """
    settings = InferenceSettings.from_config(config)
    rate = model_sample_rate(config)
    input_path = Path(input_path)
    names = list(settings.instruments)
    instrumental_from = None
    if job.extract_instrumental:
        instrumental_from = "vocals" if "vocals" in names else names[0]
        if "instrumental" in names:
            raise ValueError("--extract_instrumental: the model already has an 'instrumental' stem")
    paths = _stem_paths(job, names + (["instrumental"] if instrumental_from else []))
    subtype = job.output_format.subtype

    with tempfile.TemporaryDirectory(prefix="bsmamba2-separate-") as workdir:
        original = open_audio(input_path, workdir)
        opened = [original]
        try:
            source = original
            if source.channels > 2:
                if not job.downmix:
                    raise AudioInputError(
                        f"{input_path}: {source.channels} channels; the model takes mono or stereo. "
                        f"Pass --downmix (downmix=True) to average all channels into mono"
                    )
                source = DownmixSource(source)
            mixture_at_input_rate = source
            if original.sample_rate != rate:
                source = resample_to_file(source, original.sample_rate, rate, Path(workdir) / "model_rate.wav")
                opened.append(source)
            denormalize = None
            if wants_normalization(config):
                mean, std = mono_mix_statistics(source)
                if std > 0:  # digital silence: nothing to scale, and no division by zero
                    source = ScaledSource(source, mean, std)
                    denormalize = (mean, std)
            sink = StemFilesSink(
                stem_paths=paths,
                stem_order=names,
                channels=mixture_at_input_rate.channels,
                model_rate=rate,
                output_rate=original.sample_rate,
                output_length=original.frames,
                subtype=subtype,
                file_format=job.output_format.file_format,
                denormalize=denormalize,
                instrumental=(instrumental_from, paths["instrumental"], mixture_at_input_rate)
                if instrumental_from else None,
            )
            total = source.frames
            done = [0]

            def report(count: int) -> None:
                done[0] += count
                if progress is not None:
                    progress(done[0], total)

            try:
                separate_blocks(model, source, sink, settings, device, progress=report)
                return sink.finish()
            except BaseException:
                sink.abort()
                raise
        finally:
            for audio in opened:
                audio.close()
