"""Choosing the torch device from --device / device= (cpu, cuda, cuda:N, auto)."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None) -> torch.device:
    if isinstance(name, torch.device):
        requested = name
    else:
        text = (name or "auto").strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            requested = torch.device(text)
        except RuntimeError:
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}") from None
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here (use cpu or auto)")
        if requested.index is not None and requested.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif requested.type != "cpu":
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}")
    return requested
