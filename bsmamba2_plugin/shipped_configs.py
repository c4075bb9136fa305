"""The configs this package ships: `configs/` of the repository, `bsmamba2_plugin/configs` in a wheel."""
from __future__ import annotations

from pathlib import Path

_PLACES = (
    Path(__file__).resolve().parent / "configs",  # installed wheel
    Path(__file__).resolve().parents[1] / "configs",  # checkout / editable install
)


def shipped_config(name: str) -> Path:
    """Path of a shipped config file, e.g. `bsmamba2_vocals_small.yaml`."""
    for folder in _PLACES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"shipped config {name} not found in {' or '.join(str(p) for p in _PLACES)}")
