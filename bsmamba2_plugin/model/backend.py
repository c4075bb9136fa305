"""Which Mamba2 implementation runs: mamba-ssm's CUDA/Triton kernels or the PyTorch scan.

The choice is per call: mamba-ssm only for CUDA tensors, outside torch.compile, when it
imports. `BSMAMBA2_BACKEND` (or the `backend=` keyword of the model) forces one:
`auto` (default), `torch`, `mamba_ssm`.
"""
from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch

BACKENDS = ("auto", "torch", "mamba_ssm")
ENV_VAR = "BSMAMBA2_BACKEND"

INSTALL_HINT = (
    "install it on a CUDA machine with "
    "`pip install --no-build-isolation mamba-ssm causal-conv1d` (see README.md)"
)


def check_backend(name: str, origin: str = "backend") -> str:
    if name not in BACKENDS:
        raise ValueError(f"{origin}={name!r} is not a Mamba2 backend; expected one of {', '.join(BACKENDS)}")
    return name


@functools.lru_cache(maxsize=None)
def mamba_ssm_kernels() -> SimpleNamespace | None:
    """The mamba-ssm functions we call, or None when it cannot be imported.

    Imported lazily and guarded by `except Exception`: mamba-ssm 2.3 hard-imports its
    compiled CUDA extension, which raises OSError or RuntimeError (not only ImportError)
    on a machine without CUDA.
    """
    try:
        from mamba_ssm.ops.triton.ssd_combined import (
            mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined,
        )
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        mamba_ssm_kernels.error = error
        return None
    try:  # the fully fused path also needs causal-conv1d
        import causal_conv1d  # noqa: F401

        fused = mamba_split_conv1d_scan_combined
    except Exception:  # noqa: BLE001
        fused = None
    return SimpleNamespace(chunk_scan=mamba_chunk_scan_combined, split_conv1d_scan=fused)


def resolve_backend(requested: str | None) -> str:
    """The keyword wins over the environment variable; both default to `auto`."""
    if requested is not None:
        return check_backend(requested)
    return check_backend(os.environ.get(ENV_VAR, "auto"), origin=ENV_VAR)


def use_mamba_ssm(requested: str | None, tensor: torch.Tensor) -> bool:
    """Whether this call should run mamba-ssm's kernels."""
    backend = resolve_backend(requested)
    if backend == "torch" or (backend == "auto" and torch.compiler.is_compiling()):
        return False
    kernels = mamba_ssm_kernels()
    if backend == "mamba_ssm":
        if kernels is None:
            raise RuntimeError(
                f"the mamba_ssm backend was forced ({ENV_VAR} or backend=) but mamba_ssm cannot be "
                f"imported ({getattr(mamba_ssm_kernels, 'error', 'not installed')!r}); {INSTALL_HINT}"
            )
        if not tensor.is_cuda:
            raise RuntimeError(
                f"the mamba_ssm backend was forced but the input is on {tensor.device}; "
                "mamba-ssm's kernels run only on CUDA tensors"
            )
        return True
    return kernels is not None and tensor.is_cuda
