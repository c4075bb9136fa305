"""`training.compile`: the model's layers through torch.compile (inductor) for the training step.

Eagerly, every elementwise step around the products (the scan's decays and gates, the casts, SiLU,
the norms) is its own pass over the activations, forward and backward; inductor fuses them into
generated loops. On a CPU that is most of what bf16 autocast leaves (README: "Compiled training":
paper model, bf16 / fp32 about 1.6x eager, about 1.9x compiled; compiled bf16 2.3x eager fp32). The
price is a compile on the first step (about 80 s for the paper model on two cores, less when
inductor's on-disk cache already holds the graphs) and one compile per input shape, so the shape is
fixed: each batch has audio.chunk_size samples. Validation, separation and export stay eager.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bsmamba2_plugin.model.backend import ENV_VAR, mamba_ssm_kernels, resolve_backend
from bsmamba2_plugin.model.bsmamba2 import BidirectionalMamba
from bsmamba2_plugin.model.mamba2 import Mamba2
from bsmamba2_plugin.settings import true_or_false

from .errors import TrainingConfigError

KEY = "training.compile"
TURN_OFF = f"set {KEY}: false (and drop --compile) to train eagerly"


def compile_setting(training: Any, flag: bool) -> bool:
    """training.compile, or True when the command line's --compile asks for it."""
    try:
        return true_or_false(training.get("compile", False), KEY) or flag
    except ValueError as error:
        raise TrainingConfigError(str(error)) from None


def check_compilable(model: nn.Module, device: torch.device, chunk_size_augm: bool) -> None:
    """Refuse, before any training, what torch.compile cannot do well here (each with its way out)."""
    if chunk_size_augm:
        raise TrainingConfigError(
            f"{KEY} with augmentations.chunk_size_augm: every batch length would compile anew (over a minute "
            f"each for the paper model on a 2-core CPU); turn one of them off")
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


def compile_for_training(model: nn.Module) -> nn.Module:
    """The module the training step calls: `model`, except that each of its layers (`BidirectionalMamba`,
    the time-axis and band-axis blocks) runs through torch.compile.

    Layer by layer, because the layers are copies of one another: inductor compiles one graph per layer
    shape (time axis, band axis) and every layer of that shape reuses it. On the 2-core Xeon the paper
    model's first step compiled in 74-83 s with an empty cache, against 5.3-5.7 min for the whole
    model as one graph, and the step was no slower (README: "Compiled training"). The STFT, band
    split, mask estimators and loss stay eager: a small share of the step. `dynamic=False`: one static
    shape, since shape-generic code would lose the fixed chunk layout the fused loops are built for.
    The containers above the layers are shallow copies holding the compiled layers; parameters, buffers
    and every other module are `model`'s own, so the optimizer, EMA, checkpoints and the eager
    validation keep using `model` unchanged.
    """
    view = _with_compiled_layers(model)
    if view is model:
        raise TypeError(f"{type(model).__name__} has no BidirectionalMamba layers for {KEY} to compile")
    return view


def _with_compiled_layers(module: nn.Module) -> nn.Module:
    if isinstance(module, BidirectionalMamba):
        return torch.compile(module, dynamic=False)
    replaced = {}
    for name, child in module.named_children():
        view = _with_compiled_layers(child)
        if view is not child:
            replaced[name] = view
    if not replaced:
        return module
    view = copy.copy(module)  # shares the parameter and buffer dicts; only the children differ
    view._modules = {**module._modules, **replaced}
    return view


@contextlib.contextmanager
def first_compile(active: bool) -> Iterator[None]:
    """Around the first compiled forward and backward: a failure says that compiling was the cause."""
    try:
        yield
    except Exception as error:
        if active:
            error.add_note(f"(this failed while torch.compile compiled the training step: {KEY} is on; {TURN_OFF})")
        raise
