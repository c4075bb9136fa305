"""Which floating-point precision the model runs in: float32, or bf16 autocast where it pays.

bf16 autocast speeds the model up only where the hardware multiplies bf16 natively: CUDA
GPUs, and CPUs with AMX-BF16 or AVX512-BF16. Elsewhere bf16 matrix products are emulated and
run slower than float32 (measured on older AMD and Intel CPUs). So `auto` asks what the CPU
reports (Linux: the `flags` of /proc/cpuinfo; other systems: torch's own CPU capability
report, when it has one) instead of guessing from the CPU's name.

Whatever the precision, the model keeps its numerically delicate parts in float32: the SSD
scan's decays (the cumulative sums of dt * A and their exponentials), the norms, the STFT and
iSTFT and the mask product (see model/). In bf16 the scan's matrix products and the state it
carries between chunks take bf16 operands, in inference and in training, as mamba-ssm's Triton
kernels do under autocast: with float32 products the scan alone would hold the paper model's
forward under 1.9x of its fp32 speed on an AMX CPU (its products are 480 GFLOP per 8 s, 3.2 s at
the fp32 matmul rate), and the casts into and out of a float32 scan held a training step at 1.4x.

Policy for an explicit `bf16` where the device does not multiply bf16 natively: it runs (the
user asked for it, and the result is correct), with a `UserWarning` saying it will likely be
slower than fp32. `auto` never picks bf16 there.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .cpu_info import CPUINFO, cpu_flags

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names, in order of preference


@dataclass(frozen=True)
class Precision:
    """The outcome of `resolve_precision`: `dtype` is the autocast dtype, None for plain float32."""

    name: str  # "fp32", "bf16" or "fp16"
    dtype: torch.dtype | None
    reason: str  # one line for the user, e.g. "bf16 (CPU reports avx512_bf16)"


def _torch_reports_native_bf16() -> str | None:
    """What torch itself says about the CPU (macOS, Windows): the feature found, or None."""
    checks = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for feature, probe in checks:
        function = getattr(torch.cpu, probe, None)
        try:
            if function is not None and function():
                return feature
        except Exception:  # noqa: BLE001 - a private probe that fails means "no report"
            continue
    return None


@functools.lru_cache(maxsize=None)
def cpu_native_bf16(cpuinfo: str = CPUINFO, platform: str = sys.platform) -> tuple[bool, str]:
    """(whether this CPU multiplies bf16 natively, what says so), from what the CPU reports."""
    flags = cpu_flags(cpuinfo) if platform.startswith("linux") else None
    if flags is not None:
        for flag in NATIVE_BF16_FLAGS:
            if flag in flags:
                return True, f"CPU reports {flag}"
        return False, f"CPU reports neither {' nor '.join(NATIVE_BF16_FLAGS)} in {cpuinfo}"
    feature = _torch_reports_native_bf16()
    if feature is not None:
        return True, f"torch reports {feature} for this CPU"
    return False, "no report of native bf16 for this CPU"


def device_native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` multiplies bf16 natively, why)."""
    if device.type == "cpu":
        return cpu_native_bf16(CPUINFO, sys.platform)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} supports bf16"
        return False, f"{torch.cuda.get_device_name(device)} does not support bf16"
    return False, f"bf16 autocast is not checked on {device.type}"


def check_precision(requested: str, origin: str = "precision") -> str:
    """`requested` if it is one of PRECISIONS; otherwise a ValueError naming it and the choices."""
    if requested not in PRECISIONS:
        raise ValueError(f"{origin}={requested!r} is not a precision; expected one of {', '.join(PRECISIONS)}")
    return requested


def resolve_precision(requested: str, device: torch.device | str, use_amp: bool = True,
                      origin: str = "precision") -> Precision:
    """What `requested` ('auto', 'fp32' or 'bf16') means on `device`.

    `auto`: bf16 autocast where the device multiplies bf16 natively and `use_amp`
    (the config's training.use_amp) allows mixed precision; on a CUDA GPU without bf16 it is
    float16 autocast, as MSST's demix runs; float32 otherwise. `fp32` is always plain float32.
    `bf16` is bf16 autocast; where it is not native, a UserWarning says it will likely be slow.
    `origin` names the setting in error messages (e.g. "--precision", "inference.precision").
    """
    check_precision(requested, origin)
    device = torch.device(device)
    if requested == "fp32":
        return Precision("fp32", None, f"fp32 ({origin}=fp32)")
    native, why = device_native_bf16(device)
    if requested == "bf16":
        if not native:
            warnings.warn(f"{origin}=bf16 on {device.type}: {why}; bf16 is emulated there and likely slower "
                          f"than fp32 ({origin}=auto would pick fp32)", UserWarning, stacklevel=2)
        return Precision("bf16", torch.bfloat16, f"bf16 ({origin}=bf16; {why})")
    if not use_amp:
        return Precision("fp32", None, "fp32 (training.use_amp is false)")
    if native:
        return Precision("bf16", torch.bfloat16, f"bf16 ({why})")
    if device.type == "cuda":
        return Precision("fp16", torch.float16, f"fp16 ({why}; float16 autocast as MSST's demix)")
    return Precision("fp32", None, f"fp32 ({why})")


def training_precision(use_amp: bool, amp_dtype: str, device: torch.device | str) -> Precision:
    """The autocast of training: training.use_amp and training.amp_dtype ('bfloat16' or 'float16').

    On CUDA amp_dtype is taken as given. On a CPU use_amp means bf16 autocast where the CPU
    multiplies bf16 natively, float32 elsewhere (float16 autocast has no fast CPU path).
    """
    device = torch.device(device)
    if not use_amp:  # amp_dtype unused, as before
        return Precision("fp32", None, "fp32 (training.use_amp is false)")
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if amp_dtype not in dtypes:
        raise ValueError(f"training.amp_dtype={amp_dtype!r}: choose bfloat16 or float16")
    if device.type == "cuda":
        name = "bf16" if amp_dtype == "bfloat16" else "fp16"
        return Precision(name, dtypes[amp_dtype], f"{name} (training.use_amp on CUDA, training.amp_dtype={amp_dtype})")
    native, why = device_native_bf16(device)
    ignored = "" if amp_dtype == "bfloat16" else f"; training.amp_dtype={amp_dtype} is for CUDA, not used on CPU"
    if native:
        return Precision("bf16", torch.bfloat16, f"bf16 autocast on {device.type} ({why}){ignored}")
    return Precision("fp32", None, f"fp32 on {device.type}: {why}, so training.use_amp is not used{ignored}")


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device | str) -> Iterator[None]:
    """Autocast to `precision.dtype` on `device`'s type; nothing at all for float32."""
    device = torch.device(device)
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision.dtype):
        yield
