"""msst-compat: plugin model types in MSST's own scripts, with no edit to MSST.

An installed `msst_compat.pth` runs `msst_compat._bootstrap` at interpreter start. That adds
one import finder (no other import, no torch) which, when MSST's `utils.settings` (a checkout
of ZFTurbo/Music-Source-Separation-Training), the `msst` package's `msst.utils.settings`, or
MSST-WebUI's `utils.utils`/`utils.constant` is imported, wraps its model factory so model
types registered through msst-registry build too. Any other module is left alone.
MSST_COMPAT_DISABLE=1 turns the hook off. `python -m msst_compat script.py ...` does the same
explicitly for one run.

This module imports nothing heavy on purpose: the .pth imports it at every interpreter start.
"""
from __future__ import annotations

__version__ = "0.1.0"

DISABLE_ENV_VAR = "MSST_COMPAT_DISABLE"


def install() -> bool:
    """Add the import hook to this interpreter (idempotent) and patch MSST modules already imported."""
    from ._bootstrap import install_finder
    from .patching import patch_already_imported

    installed = install_finder()
    patch_already_imported()
    return installed
