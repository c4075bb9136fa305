"""Separation: one engine (MSST-identical overlap-add, TTA, bigshifts) for arrays, files and streams."""
from __future__ import annotations

from bsmamba2_plugin.lazy_exports import lazy_exports

# Loaded on first use, so `python -m bsmamba2_plugin.separate` can tune the CPU allocator before torch starts.
_LAZY = {
    "ChunkSchedule": "bsmamba2_plugin.separate.overlap_add",
    "OverlapAdd": "bsmamba2_plugin.separate.overlap_add",
    "InferenceSettings": "bsmamba2_plugin.settings",
    "OutputFormat": "bsmamba2_plugin.separate.output_naming",
    "FolderReport": "bsmamba2_plugin.separate.separator",
    "Separator": "bsmamba2_plugin.separate.separator",
    "StreamingSeparator": "bsmamba2_plugin.separate.separator",
    "demix": "bsmamba2_plugin.separate.separator",
    "separate_track": "bsmamba2_plugin.separate.separator",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
