"""Choosing the torch device from --device / device= (auto, cpu, cuda, cuda:N, mps).

``auto`` is MSST inference.py's choice: CUDA when available, else Apple's MPS, else the CPU.
"""
from __future__ import annotations

import torch

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None) -> torch.device:
    if isinstance(name, torch.device):
        requested = name
    else:
        text = (name or "auto").strip().lower()
        if text == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            return torch.device("mps" if mps_available() else "cpu")
        try:
            requested = torch.device(text)
        except RuntimeError:
            raise ValueError(f"device must be {CHOICES}; got {name!r}") from None
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here (use cpu or auto)")
        if requested.index is not None and requested.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif requested.type == "mps":
        if not mps_available():
            raise ValueError(f"device {name!r} requested but MPS (Apple's Metal backend) is not available here "
                             f"(torch.backends.mps.is_available() is False; use cpu or auto)")
    elif requested.type != "cpu":
        raise ValueError(f"device must be {CHOICES}; got {name!r}")
    return requested
