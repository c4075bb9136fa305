"""Output file names from MSST's ``--filename_template`` (fields in braces, '/' makes folders)."""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import soundfile as sf

DEFAULT_TEMPLATE = "{relative_path}/{instr}"  # msst 0.1.0's default; "{file_name}_{instr}" is the older MSST name


@dataclass(frozen=True)
class OutputFormat:
    flac: bool = False
    pcm_type: str | None = None  # None: FLOAT for WAV, PCM_24 for FLAC, as msst does

    @property
    def extension(self) -> str:
        return "flac" if self.flac else "wav"

    @property
    def file_format(self) -> str:
        return "FLAC" if self.flac else "WAV"

    @property
    def subtype(self) -> str:
        subtype = self.pcm_type or ("PCM_24" if self.flac else "FLOAT")
        if subtype not in sf.available_subtypes(self.file_format):
            supported = ", ".join(sorted(sf.available_subtypes(self.file_format)))
            raise ValueError(f"{self.file_format} cannot store pcm_type {subtype!r}; supported: {supported}")
        return subtype


def output_path(template: str, store_dir: Path, file_extension: str, fields: dict[str, str]) -> Path:
    """The file for one stem; raises ValueError for unknown fields or paths escaping ``store_dir``."""
    if not template or not template.strip():
        raise ValueError("filename_template cannot be empty")
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:
        raise ValueError(f"filename_template {template!r} is not valid: {error}") from error
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise ValueError(
            f"filename_template {template!r} uses unknown field(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(fields))}"
        )
    text = template.format(**fields).replace("\\", "/")
    path = PurePosixPath(text)
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts or path.is_absolute() or ".." in parts:
        raise ValueError(f"filename_template {template!r} gives an unsafe path {text!r}")
    return store_dir.joinpath(*parts[:-1], f"{parts[-1]}.{file_extension}")


def check_template(template: str) -> None:
    """The ValueError `output_path` would raise for every file (an unknown field, bad braces, an empty or
    escaping name), raised before any file is separated."""
    output_path(template, Path("."), "wav", template_fields(Path("song.wav"), "vocals", "bsmamba2", "model", 0))


def template_fields(relative_input: Path, instrument: str, model_type: str, model_name: str,
                    start_time: int) -> dict[str, str]:
    directory = relative_input.parent.as_posix()
    return {
        "instr": instrument,
        "file_name": relative_input.stem,
        "dir_name": directory,
        "relative_path": relative_input.with_suffix("").as_posix(),
        "extension": relative_input.suffix.lower().lstrip("."),
        "model_type": model_type,
        "model": model_name,
        "start_time": str(start_time),
    }


@dataclass
class FileJob:
    """Where one file's stems go and in which format."""

    store_dir: Path
    relative_input: Path
    filename_template: str = DEFAULT_TEMPLATE
    output_format: OutputFormat = field(default_factory=OutputFormat)
    model_type: str = "bsmamba2"
    model_name: str = ""
    start_time: int = 0

    def stem_paths(self, names: list[str]) -> dict[str, Path]:
        paths = {}
        for name in names:
            fields = template_fields(self.relative_input, name, self.model_type, self.model_name, self.start_time)
            paths[name] = output_path(self.filename_template, self.store_dir, self.output_format.extension, fields)
        if len(set(paths.values())) != len(paths):
            raise ValueError(f"filename_template {self.filename_template!r} maps several stems to the same file; "
                             f"include {{instr}}")
        return paths
