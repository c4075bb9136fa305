"""Evaluation over MUSDB18HQ-style folders: uSDR, cSDR (museval v4) and silent-region leakage."""
from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so `python -m bsmamba2_plugin.evaluate` can tune the CPU allocator before torch starts.
_LAZY = {
    "Track": "bsmamba2_plugin.evaluate.dataset",
    "find_tracks": "bsmamba2_plugin.evaluate.dataset",
    "Evaluation": "bsmamba2_plugin.evaluate.run",
    "evaluate_tracks": "bsmamba2_plugin.evaluate.run",
    "StemScore": "bsmamba2_plugin.evaluate.scoring",
    "StemSummary": "bsmamba2_plugin.evaluate.scoring",
    "summarize": "bsmamba2_plugin.evaluate.scoring",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
