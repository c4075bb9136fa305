"""bsmamba2-plugin: the BSMamba2 separation model for the MSST ecosystem.

Heavy names (torch models) load on first use, so `import bsmamba2_plugin` stays cheap.
"""
from __future__ import annotations

from bsmamba2_plugin.lazy_exports import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "BSMamba2": "bsmamba2_plugin.model",
    "Mamba2": "bsmamba2_plugin.model",
    "load_model": "bsmamba2_plugin.checkpoint",
    "read_state_dict": "bsmamba2_plugin.checkpoint",
    "load_weights": "bsmamba2_plugin.checkpoint",
    "CheckpointError": "bsmamba2_plugin.checkpoint",
    "load_config": "bsmamba2_plugin.config",
    "separate_track": "bsmamba2_plugin.separate",
    "Separator": "bsmamba2_plugin.separate",
    "demix": "bsmamba2_plugin.separate",
    "tune_cpu_allocator": "bsmamba2_plugin.cpu_allocator",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
