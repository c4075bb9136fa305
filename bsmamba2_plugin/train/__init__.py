"""Standalone BSMamba2 trainer: `python -m bsmamba2_plugin.train` (MSST flags, configs and checkpoints)."""
from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
