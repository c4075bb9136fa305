"""One request of the page: separate uploaded files into the request's private folder.

Independent of Gradio (the page calls it; tests call it directly). Each file goes through
``Separator.separate_file`` (block-wise reading and writing, temporary files), then the
block-wise spectrogram and level analysis; nothing holds a whole track in memory. A file that fails
is reported with its message and the others still run.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bsmamba2_plugin.app.analysis import levels_markdown, spectrogram_png, stem_levels
from bsmamba2_plugin.app.workspace import Workspace, safe_extension, safe_name
from bsmamba2_plugin.atomic_file import atomic_path
from bsmamba2_plugin.separate.output_naming import OutputFormat

INSTRUMENTAL = "instrumental"
OUTPUT_FORMATS = {  # label in the page -> what the separator writes
    "WAV, 32-bit float": OutputFormat(flac=False, pcm_type="FLOAT"),
    "WAV, 24-bit": OutputFormat(flac=False, pcm_type="PCM_24"),
    "WAV, 16-bit": OutputFormat(flac=False, pcm_type="PCM_16"),
    "FLAC, 24-bit": OutputFormat(flac=True, pcm_type="PCM_24"),
    "FLAC, 16-bit": OutputFormat(flac=True, pcm_type="PCM_16"),
}
ZIP_NAME = "bsmamba2_stems.zip"


@dataclass
class FileResult:
    index: int
    name: str  # safe display name, e.g. "song.wav"
    stems: dict[str, Path] = field(default_factory=dict)
    spectrogram: Path | None = None
    levels: str = ""
    error: str | None = None
    seconds: float = 0.0

    def as_state(self) -> dict[str, Any]:
        """JSON-able, paths as strings: what the page's session keeps (paths only, never audio)."""
        return {"index": self.index, "name": self.name, "stems": {k: str(v) for k, v in self.stems.items()},
                "spectrogram": str(self.spectrogram) if self.spectrogram else None, "levels": self.levels,
                "error": self.error, "seconds": self.seconds}


def stem_choices(instruments: list[str]) -> list[str]:
    """The stems a user can ask for: the model's, plus the instrumental (mixture minus vocals or the first stem)."""
    return list(instruments) + ([] if INSTRUMENTAL in instruments else [INSTRUMENTAL])


def _error_text(error: BaseException, input_path: Path, display: str) -> str:
    text = str(error).replace(str(input_path), display)  # never show the server's folders
    if "Pass --downmix" in text:
        text = text.split(" Pass --downmix")[0] + " Tick 'Downmix to mono' to average the channels."
    return f"{type(error).__name__}: {text}" if not isinstance(error, ValueError) else text


def separate_uploads(
    separator: Any,
    uploads: list[tuple[Path, str]],
    folder: Path,
    workspace: Workspace,
    *,
    stems: list[str] | None = None,
    output_format: OutputFormat | None = None,
    downmix: bool = False,
    per_call: dict[str, Any] | None = None,
    progress_for: Callable[[int, str], Callable[[int, int], None] | None] | None = None,
    on_stage: Callable[[int, str, str], None] | None = None,
) -> list[FileResult]:
    """Separate each (uploaded path, uploaded name) into ``folder/<n>/``; returns one result per file.

    ``stems`` (default: all) selects what is kept; ``per_call`` are extra ``separate_file`` keywords
    (TTA, overlap). ``progress_for(index, name)`` gives the per-file ``progress(done, total)``.
    """
    available = stem_choices(separator.instruments)
    wanted = list(available) if stems is None else list(stems)
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ValueError(f"stems {unknown or wanted} not offered by this model; choose among {available}")
    results = []
    for index, (uploaded, uploaded_name) in enumerate(uploads):
        display = safe_name(uploaded_name) + safe_extension(uploaded_name)
        result = FileResult(index=index, name=display)
        results.append(result)
        started = time.time()
        target = folder / f"{index + 1:02d}"
        target.mkdir()
        input_path = Path(uploaded)
        try:
            input_path = workspace.take_input(uploaded, target, index + 1)
            written = separator.separate_file(
                input_path, target, relative_input=Path(display), filename_template="{file_name}_{instr}",
                output_format=output_format or OUTPUT_FORMATS["WAV, 32-bit float"],
                extract_instrumental=INSTRUMENTAL in wanted and INSTRUMENTAL not in separator.instruments,
                downmix=downmix, progress=progress_for(index, display) if progress_for else None,
                **(per_call or {}),
            )
            if on_stage:
                on_stage(index, display, "drawing spectrograms and measuring levels")
            reference = "vocals" if "vocals" in written else next(iter(written))
            result.levels = levels_markdown(stem_levels(written, reference, target))
            for name in list(written):
                if name not in wanted:
                    written.pop(name).unlink()
            result.stems = written
            result.spectrogram = spectrogram_png(
                [(f"mixture ({display})", input_path)] + [(name, path) for name, path in written.items()],
                target / f"{safe_name(uploaded_name)}_spectrogram.png", target)
        except Exception as error:  # noqa: BLE001 - one bad file is reported, the others still run
            result.error = _error_text(error, input_path, display)
            result.stems = {}
        finally:
            if input_path.parent == target:  # the request's own link to the upload
                input_path.unlink(missing_ok=True)
            result.seconds = time.time() - started
    return results


def zip_stems(results: list[FileResult], folder: Path) -> Path | None:
    """All stems of all separated files in one zip (stored: audio barely compresses), written atomically."""
    members = [(f"{r.index + 1:02d}_{Path(r.name).stem}/{path.name}", path)
               for r in results for path in r.stems.values()]
    if not members:
        return None
    target = folder / ZIP_NAME
    with atomic_path(target) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, path in members:
                archive.write(path, arcname=name)  # zipfile copies in blocks: bounded memory
    return target


def status_markdown(results: list[FileResult], notice: str = "") -> str:
    lines = [notice, ""] if notice else []
    for r in results:
        if r.error:
            lines.append(f"- **{r.name}**: failed: {r.error}")
        else:
            lines.append(f"- **{r.name}**: separated into {', '.join(r.stems)} in {r.seconds:.1f} s")
    done = sum(1 for r in results if not r.error)
    lines.append("")
    lines.append(f"Separated {done} of {len(results)} file(s)." if results else "No file uploaded.")
    return "\n".join(lines)
