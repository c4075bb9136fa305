"""Separation: MSST-identical chunked demixing, block-wise file processing, API and command."""
from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so `python -m bsmamba2_plugin.separate` can tune the CPU allocator before torch starts.
_LAZY = {
    "ChunkPlan": "bsmamba2_plugin.separate.chunk_plan",
    "InferenceSettings": "bsmamba2_plugin.separate.chunk_plan",
    "demix": "bsmamba2_plugin.separate.msst_demix",
    "OutputFormat": "bsmamba2_plugin.separate.output_naming",
    "separate_blocks": "bsmamba2_plugin.separate.overlap_add",
    "FolderReport": "bsmamba2_plugin.separate.track",
    "Separator": "bsmamba2_plugin.separate.track",
    "separate_track": "bsmamba2_plugin.separate.track",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
