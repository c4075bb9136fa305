"""Evaluation over MUSDB18HQ-style folders: uSDR, cSDR (museval v4) and silent-region leakage."""
from __future__ import annotations

from bsmamba2_plugin.lazy_exports import lazy_exports

# Loaded on first use, so `python -m bsmamba2_plugin.evaluate` can tune the CPU allocator before torch starts.
_LAZY = {
    "TrackFolder": "bsmamba2_plugin.evaluate.track_folders",
    "find_tracks": "bsmamba2_plugin.evaluate.track_folders",
    "Evaluation": "bsmamba2_plugin.evaluate.run",
    "evaluate_tracks": "bsmamba2_plugin.evaluate.run",
    "StemScore": "bsmamba2_plugin.evaluate.scoring",
    "StemSummary": "bsmamba2_plugin.evaluate.scoring",
    "summarize": "bsmamba2_plugin.evaluate.scoring",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
