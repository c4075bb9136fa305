"""The one way this package writes a file: to a hidden temporary beside it, then renamed over it.

A kill at any moment leaves either the old file or the complete new one, never a torn one, and
a failed write removes its temporary.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path) -> Path:
    """Hidden, per-process, in the target's folder (so the rename stays on one file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems (and Windows) cannot open a folder: the rename still happened
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def commit_temporary(temporary: Path, path: Path) -> Path:
    """fsync ``temporary`` (a file or a folder of files), rename it to ``path``, fsync the folder.

    A folder cannot be renamed over a folder that holds files: the old one is first renamed to a
    hidden name beside it, then removed. A kill between the two renames leaves the complete old
    folder under that hidden name and the complete new one under its own temporary name."""
    if temporary.is_dir():
        for child in temporary.rglob("*"):
            if child.is_file():
                _fsync_file(child)
    else:
        _fsync_file(temporary)
    old = None
    if temporary.is_dir() and path.is_dir():
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        discard_temporary(old)
        os.replace(path, old)
    os.replace(temporary, path)
    _fsync_directory(path.parent)
    if old is not None:
        discard_temporary(old)
    return path


def discard_temporary(temporary: Path) -> None:
    if temporary.is_dir():
        shutil.rmtree(temporary, ignore_errors=True)
    else:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_path(target) as temporary:`` write ``temporary``; on success it becomes ``target``.

    The caller may create a file or a folder at ``temporary``. On an exception it is removed and
    ``target`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    discard_temporary(temporary)
    try:
        yield temporary
        commit_temporary(temporary, path)
    except BaseException:
        discard_temporary(temporary)
        raise


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomically(path, text.encode("utf-8"))
