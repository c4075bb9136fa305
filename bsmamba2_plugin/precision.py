"""INTERIM (replaced by the precision helper's module at merge): fp32 everywhere but CUDA+use_amp."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: torch.dtype | None
    reason: str


def resolve_precision(requested: str, device: torch.device, use_amp: bool) -> Precision:
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16; got {requested!r}")
    if device.type == "cuda" and use_amp and requested != "fp32":
        return Precision("amp", torch.float16, "CUDA with training.use_amp")
    return Precision("fp32", None, "fp32")


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision.dtype):
        yield
