"""The app's working folder: one private folder per request, safe file names, removal after a time.

Layout (the folder is also Gradio's upload and file cache, ``GRADIO_TEMP_DIR``, so outputs written
here are served without being copied and nothing outside it is served):

    <work_dir>/<sha>/<name>              Gradio's uploads (its own layout)
    <work_dir>/requests/<token>/          one separation request: inputs, stems, pictures, zip

``token`` is 128 random bits: the only way to reach a request's files is the URL its own page got.
Uploaded names are only ever used after ``safe_name``; they never decide a folder.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import time
import unicodedata
from pathlib import Path

REQUESTS = "requests"
MAX_NAME_CHARS = 80
_UNSAFE = re.compile(r"[^\w\-. ]+")  # \w is Unicode letters, digits and '_'
_EXTENSION = re.compile(r"^\.[a-z0-9]{1,10}$")
_UPLOAD = re.compile(r"^([0-9a-f]{64}|tmp\w+)$")


def safe_name(uploaded_name: str | None, fallback: str = "audio") -> str:
    """A file-name stem made from an uploaded name: no folder parts, no leading dot, bounded length.

    ``../../x.wav`` gives ``x``, ``/etc/passwd`` gives ``passwd``, an empty name gives ``fallback``.
    """
    text = unicodedata.normalize("NFKC", uploaded_name or "").replace("\\", "/")
    text = text.rsplit("/", 1)[-1]  # the last path part only
    stem = text.rsplit(".", 1)[0] if "." in text.lstrip(".") else text
    stem = _UNSAFE.sub("_", stem).strip(" ._")
    stem = stem[:MAX_NAME_CHARS].rstrip(" ._")
    return stem or fallback


def safe_extension(uploaded_name: str | None) -> str:
    """The name's extension, lower case, when it is short and alphanumeric (ffmpeg may need it); else ''."""
    text = (uploaded_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    suffix = Path(text).suffix.lower()
    return suffix if _EXTENSION.match(suffix) else ""


def inside(path: Path, folder: Path) -> bool:
    """True when ``path`` (resolved, links followed) lies inside ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class Workspace:
    """Creates request folders under ``root`` and removes those older than ``keep_seconds``."""

    def __init__(self, root: str | os.PathLike[str], keep_seconds: float):
        if keep_seconds <= 0:
            raise ValueError(f"keep time must be positive, got {keep_seconds} s")
        self.root = Path(root).resolve()
        self.keep_seconds = float(keep_seconds)
        (self.root / REQUESTS).mkdir(parents=True, exist_ok=True)
        self._active: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def new_request(self) -> Path:
        """A fresh private folder, marked active until ``finish`` (the sweeper leaves it alone)."""
        folder = self.root / REQUESTS / secrets.token_hex(16)
        folder.mkdir(mode=0o700)
        with self._lock:
            self._active.add(folder)
        return folder

    def finish(self, folder: Path) -> None:
        """The request is done: its age for removal counts from now."""
        os.utime(folder)
        with self._lock:
            self._active.discard(folder)

    def take_input(self, uploaded: str | os.PathLike[str], folder: Path, index: int) -> Path:
        """Link (or copy) an uploaded file into ``folder`` as ``input-<index><ext>``.

        The request keeps its own copy, so removing Gradio's upload cannot break a running job, and
        the uploaded name decides only the extension (validated), never the folder.
        """
        uploaded = Path(uploaded)
        if not uploaded.is_file():
            raise FileNotFoundError(f"uploaded file {uploaded.name!r} is no longer on the server (re-upload it)")
        target = folder / f"input-{index}{safe_extension(uploaded.name)}"
        try:
            os.link(uploaded, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(uploaded, target)
        return target

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove requests and uploads not modified for ``keep_seconds``; returns what was removed."""
        now = time.time() if now is None else now
        removed = []
        candidates = list((self.root / REQUESTS).iterdir())
        # Gradio's uploads: content-hash folders and its multipart temporaries (not its other folders)
        candidates += [p for p in self.root.iterdir() if _UPLOAD.match(p.name)]
        for path in candidates:
            with self._lock:
                if path in self._active:
                    continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < self.keep_seconds:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def start_sweeping(self, interval: float | None = None) -> None:
        """Sweep in a daemon thread every ``interval`` seconds (default: a quarter of the keep time, 5 s to 5 min)."""
        interval = interval or min(300.0, max(5.0, self.keep_seconds / 4))

        def run() -> None:
            while not self._stop.wait(interval):
                self.sweep()

        self._thread = threading.Thread(target=run, name="bsmamba2-app-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
