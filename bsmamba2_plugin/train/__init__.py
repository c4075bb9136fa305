"""Standalone BSMamba2 trainer: `python -m bsmamba2_plugin.train` (MSST flags, configs and checkpoints)."""
from __future__ import annotations

from bsmamba2_plugin.lazy_exports import lazy_exports

# Loaded on first use, so `python -m bsmamba2_plugin.train` can tune the CPU allocator before torch starts.
_LAZY = {
    "build_parser": "bsmamba2_plugin.train.cli",
    "main": "bsmamba2_plugin.train.cli",
    "parse_args": "bsmamba2_plugin.train.cli",
    "NonFiniteLossError": "bsmamba2_plugin.train.errors",
    "TrainingConfigError": "bsmamba2_plugin.train.errors",
    "TrainingDataError": "bsmamba2_plugin.train.errors",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
