"""`training.compile`: the training forward through torch.compile (inductor).

Eagerly, every elementwise step around the products (the scan's decays and gates, the casts into and
out of the fp32 scan, SiLU, the norms) is its own pass over the activations, forward and backward;
inductor fuses them into generated loops. On a CPU that is most of what bf16 autocast leaves
(README: "Compiled training": paper model, bf16 / fp32 about 1.3x eager, about 1.5x compiled). The
price is a compile on the first step (minutes on a small CPU, less when inductor's on-disk cache
already holds the graphs) and one compile per input shape, so the shape is fixed: each batch has
audio.chunk_size samples. Validation, separation and export stay eager.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bsmamba2_plugin.model.backend import ENV_VAR, mamba_ssm_kernels, resolve_backend
from bsmamba2_plugin.model.mamba2 import Mamba2

from .errors import TrainingConfigError

KEY = "training.compile"
TURN_OFF = f"set {KEY}: false (and drop --compile) to train eagerly"


def compile_setting(training: Any, flag: bool) -> bool:
    """training.compile, or True when the command line's --compile asks for it."""
    value = training.get("compile", False)
    if not isinstance(value, bool):
        raise TrainingConfigError(f"{KEY}={value!r}: expected true or false")
    return value or flag


def check_compilable(model: nn.Module, device: torch.device, chunk_size_augm: bool) -> None:
    """Refuse, before any training, what torch.compile cannot do well here (each with its way out)."""
    if chunk_size_augm:
        raise TrainingConfigError(
            f"{KEY} with augmentations.chunk_size_augm: every batch length would compile anew (minutes each); "
            f"turn one of them off")
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # a torch without this helper: the first step reports a missing compiler itself
            return
        try:
            get_cpp_compiler()
        except Exception as error:  # noqa: BLE001 - InvalidCxxCompiler and whatever the search raises
            raise TrainingConfigError(
                f"{KEY} on a CPU needs a C++ compiler for torch.compile's generated code ({error}); install one "
                f"(g++ or clang++, or name it in $CXX) or {TURN_OFF}") from None
    if device.type == "cuda":
        backends = {resolve_backend(m.backend) for m in model.modules() if isinstance(m, Mamba2)}
        if "mamba_ssm" in backends or ("auto" in backends and mamba_ssm_kernels() is not None):
            raise TrainingConfigError(
                f"{KEY} on CUDA would run the compiled PyTorch scan instead of mamba-ssm's fused kernels, which "
                f"are faster and lighter; {TURN_OFF}, or set {ENV_VAR}=torch to compile the PyTorch path")


def compile_for_training(module: nn.Module) -> nn.Module:
    """The module as torch.compile runs it, one static shape (`dynamic=False`: shape-generic code
    would lose the fixed chunk layout of the scan that the fused loops are built for)."""
    # Inductor warns that it leaves complex ops (the mask times the mixture's STFT) to ATen, "performance may
    # be worse than eager"; measured, the compiled step is faster all the same, so the warning would mislead.
    warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
    return torch.compile(module, dynamic=False)


@contextlib.contextmanager
def first_compile(active: bool) -> Iterator[None]:
    """Around the first compiled forward and backward: a failure says that compiling was the cause."""
    try:
        yield
    except Exception as error:
        if active:
            error.add_note(f"(this failed while torch.compile compiled the training step: {KEY} is on; {TURN_OFF})")
        raise
