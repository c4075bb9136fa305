"""The PyTorch path's projections, x W^T (+ b), and which library multiplies them in float32 on a CPU.

torch multiplies float32 matrices on a CPU with MKL, which takes its fastest kernels only on Intel
CPUs. oneDNN, which torch also ships (it already runs torch's bf16 products and the model's conv),
does not look at the vendor. On a 2-core AMD EPYC (Zen 4) it ran the paper model's projection
shapes 1.1x to 1.7x as fast as MKL and its float32 forward 1.17x (`benchmarks/model_speed.py
--compare_cpu_gemm`; README, "float32 products on AMD CPUs"); with both libraries held to AVX2, as
on Zen 2 and Zen 3, 1.05x. On a 2-core Intel Xeon the same forward took 1.08x as long through oneDNN
as through MKL, so Intel CPUs keep MKL. Projections are 81 % of the model's FLOPs.

`BSMAMBA2_CPU_GEMM` picks the library: `auto` (default: oneDNN on AMD CPUs, torch's own choice,
MKL, elsewhere), `mkl` (torch's own choice everywhere) or `onednn`. Only inference takes the oneDNN
path: float32 tensors on a CPU, no gradient recorded (oneDNN's linear has no backward in torch), no
autocast (there torch's bf16 products are oneDNN's already), and neither torch.compile nor the ONNX
export tracing it (both see the plain product).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator

import torch
from torch import Tensor

from ..cpu_info import CPUINFO, cpu_vendor

CPU_GEMMS = ("auto", "mkl", "onednn")
ENV_VAR = "BSMAMBA2_CPU_GEMM"
LIBRARY_NAMES = {"mkl": "torch's own (MKL on x86)", "onednn": "oneDNN"}


def check_cpu_gemm(name: str, origin: str = ENV_VAR) -> str:
    """`name` if it is one of CPU_GEMMS; otherwise a ValueError naming `origin`, the value and the choices."""
    if name not in CPU_GEMMS:
        raise ValueError(f"{origin}={name!r} is not a CPU GEMM choice; expected one of {', '.join(CPU_GEMMS)}")
    return name


def requested_cpu_gemm() -> str:
    """`BSMAMBA2_CPU_GEMM`, checked (read at every call, as the backend setting is)."""
    return check_cpu_gemm(os.environ.get(ENV_VAR, "auto"))


@functools.lru_cache(maxsize=None)
def _onednn_linear():
    """torch's oneDNN linear on plain (strided) float32 tensors, where this build of torch has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


@functools.lru_cache(maxsize=None)
def _auto_cpu_gemm(cpuinfo: str = CPUINFO, platform: str = sys.platform) -> tuple[str, str]:
    vendor = cpu_vendor(cpuinfo if platform.startswith("linux") else None)
    if vendor != "AuthenticAMD":
        return "mkl", f"{LIBRARY_NAMES['mkl']} ({'the CPU is ' + vendor if vendor else 'CPU vendor unknown'})"
    if _onednn_linear() is None:
        return "mkl", f"{LIBRARY_NAMES['mkl']} (an AMD CPU, but this torch has no oneDNN linear)"
    return "onednn", "oneDNN (an AMD CPU, where MKL's float32 GEMM is the slower)"


def cpu_gemm() -> tuple[str, str]:
    """(the library that multiplies the projections in float32 on this CPU, "mkl" or "onednn",
    a line for the user saying which and why)."""
    requested = requested_cpu_gemm()
    if requested == "auto":
        return _auto_cpu_gemm()
    if requested == "onednn" and _onednn_linear() is None:
        raise RuntimeError(f"{ENV_VAR}=onednn, but this build of torch has no oneDNN linear "
                           "(torch.ops.mkldnn._linear_pointwise); set it to auto or mkl")
    return requested, f"{LIBRARY_NAMES[requested]} ({ENV_VAR}={requested})"


@contextlib.contextmanager
def using_cpu_gemm(name: str) -> Iterator[None]:
    """`BSMAMBA2_CPU_GEMM` set to `name` inside the block (benchmarks comparing the libraries in one run)."""
    check_cpu_gemm(name, "using_cpu_gemm")
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENV_VAR]
        else:
            os.environ[ENV_VAR] = before


def project(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., k) @ weight (n, k)^T + bias (n,) -> (..., n): a linear layer, in float32 CPU inference
    through the library `cpu_gemm` picks."""
    # Traced (compile, export): torch's product, before the setting is even read (an os.environ read
    # inside a traced function would be a guard of the graph). Elsewhere the setting is checked on
    # every device, so that a wrong value is never passed over in silence.
    traced = torch.compiler.is_compiling() or torch.compiler.is_exporting()
    if not traced and cpu_gemm()[0] == "onednn" and _takes_onednn(x, weight, bias):
        out = _onednn_linear()(x.reshape(-1, x.shape[-1]), weight.contiguous(), bias, "none", [], "")
        return out.view(*x.shape[:-1], weight.shape[0])
    if bias is None:
        return x @ weight.t()
    return torch.nn.functional.linear(x, weight, bias)


def _takes_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (x.device.type == "cpu" and all(t.dtype == torch.float32 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and not torch.is_autocast_enabled("cpu"))
