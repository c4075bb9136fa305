"""Separation: MSST-identical chunked demixing, block-wise file processing, API and command."""
from __future__ import annotations

from bsmamba2_plugin.lazy_exports import lazy_exports

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
__getattr__ = lazy_exports(__name__, _LAZY)
