"""Faster CPU tensors for large activations: huge pages, and memory kept between ops.

The model's activations are hundreds of MB each. By default glibc hands such blocks back to
the kernel on free and the next op faults every 4 KiB page in again, which on CPU costs more
than the arithmetic (measured: an elementwise multiply of 0.9 GB went from 0.48 s to 0.05 s).
This keeps freed memory in the process (no mmap for large blocks, no trimming) and asks
PyTorch for transparent huge pages. Peak RSS is unchanged; memory is not returned to the OS
until the process ends. Called by the package's commands; library users may call it.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def tune_cpu_allocator() -> bool:
    """Apply the settings; True when glibc accepted them. Call it before torch allocates,
    for the huge-page part (PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first allocation)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # Threshold -1: never trim. A finite one (even 2**31 - 1) still hands memory back whenever that
        # much lies free at the top of the heap, which the paper model's 8 s forward reaches: with -1 it
        # took 10x fewer page faults and 3 s less.
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):  # not glibc (musl, ...): keep the defaults
        return False
