"""The BSMamba2 model and its Mamba2 layer."""
from .bsmamba2 import DEFAULT_FREQS_PER_BANDS, MODEL_KEYS, BSMamba2
from .mamba2 import Mamba2

__all__ = ["BSMamba2", "Mamba2", "DEFAULT_FREQS_PER_BANDS", "MODEL_KEYS"]
