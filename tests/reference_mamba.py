"""MSST's real `BSMamba2Model` and mamba-ssm's real `Mamba2`, built on a machine without CUDA.

mamba-ssm cannot be installed or imported here: its package `__init__` imports the compiled
`selective_scan_cuda`, and its kernels are Triton. So the files MSST's model needs are loaded
one by one from mamba-ssm's source distribution, never through that `__init__`:
`modules/mamba2.py`, `modules/block.py`, `modules/mamba_simple.py`, `modules/mlp.py`,
`modules/mha.py`, `models/mixer_seq_simple.py` (for `_init_weights`), `models/config_mamba.py`,
`distributed/*.py`, `utils/torch.py`; MSST's `bs_mamba2.py` and `attend_mamba.py` load unchanged.

Stand-ins replace ONLY the compiled CUDA / Triton kernels and two modules that only
mamba's language model uses; each kernel stand-in is built from mamba-ssm's OWN pure-PyTorch
reference implementation, compiled from the real source file (functions picked out of it
with `ast`, so the Triton kernels beside them are never imported):

- `ops.triton.layer_norm` (`RMSNorm`, `rms_norm_fn`, `layer_norm_fn`): mamba's `RMSNorm`
  class over its `rms_norm_ref` / `layer_norm_ref` (fp32 inside, as the kernel).
- `ops.triton.layernorm_gated` (`RMSNorm`, `rmsnorm_fn`): mamba's class over its gated
  `rms_norm_ref`.
- `ops.triton.ssd_combined.mamba_chunk_scan_combined` (Mamba2 with use_mem_eff_path=False):
  `ssd_minimal_discrete` of `modules/ssd_minimal.py`, with dt = softplus(dt + dt_bias), the
  sequence zero-padded to the chunk length (exact for a causal scan), and the D skip.
- `ops.triton.ssd_combined.mamba_split_conv1d_scan_combined` (use_mem_eff_path=True, MSST's
  default): mamba's `mamba_split_conv1d_scan_ref`, whose scan is `selective_scan_ref` of
  `ops/selective_scan_interface.py` (a sequential recurrence), with a depthwise causal
  `F.conv1d` standing in for the causal-conv1d CUDA package.
- `ops.selective_scan_interface`: `selective_scan_fn` = mamba's `selective_scan_ref`;
  `mamba_inner_fn` (Mamba-1 only) raises.
- `ops.triton.selective_state_update` and `causal_conv1d`: absent (mamba's own fallbacks).
- `utils.generation`, `utils.hf` (they import transformers; only MambaLMHeadModel uses them)
  and `huggingface_hub.PyTorchModelHubMixin` when huggingface_hub is not installed: empty.

All of this is installed in `sys.modules` only while the files load (and the one import that
mamba's reference code does at call time), then the previous entries are restored, so
`bsmamba2_plugin`'s own lazy `import mamba_ssm` check never sees these stand-ins.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import math
import sys
import types
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reference_sources import MsstSource

# Packages whose `__init__` must not run (mamba_ssm's imports the CUDA extension).
MAMBA_PACKAGES = ("", ".ops", ".ops.triton", ".modules", ".models", ".utils", ".distributed")
REAL_MAMBA_MODULES = (
    "mamba_ssm.utils.torch",
    "mamba_ssm.distributed.distributed_utils",
    "mamba_ssm.distributed.tensor_parallel",
    "mamba_ssm.models.config_mamba",
    "mamba_ssm.modules.mlp",
    "mamba_ssm.modules.mha",
    "mamba_ssm.modules.block",
    "mamba_ssm.modules.mamba2",
    "mamba_ssm.modules.mamba_simple",
    "mamba_ssm.models.mixer_seq_simple",
)
# MSST's file imports its attention helper by the repository path or the package path.
MSST_ATTEND_NAMES = ("models.bs_mamba2_code.attend_mamba", "msst.models.bs_mamba2_code.attend_mamba")


@dataclass
class MambaReference:
    """The real classes, loaded from the pinned sources."""

    mamba2_module: types.ModuleType  # mamba_ssm/modules/mamba2.py
    block_module: types.ModuleType  # mamba_ssm/modules/block.py
    init_weights: Any  # mamba_ssm/models/mixer_seq_simple.py::_init_weights
    msst_module: types.ModuleType  # MSST's bs_mamba2.py
    msst_origin: str
    mamba_root: Path

    @property
    def Mamba2(self) -> type[nn.Module]:
        return self.mamba2_module.Mamba2

    @property
    def BSMamba2Model(self) -> type[nn.Module]:
        return self.msst_module.BSMamba2Model

    def build_msst_model(self, model_section: Mapping[str, Any], fused_path: bool) -> nn.Module:
        """MSST's model as `get_model_from_config('bs_mamba2', ...)` builds it.

        fused_path chooses which of Mamba2's two forward paths runs: True is its default
        (`use_mem_eff_path`, the fused kernel), False the unfused one (conv1d + chunk scan).
        """
        model = self.BSMamba2Model(**dict(model_section))
        self.set_mem_eff_path(model, fused_path)
        return model

    def set_mem_eff_path(self, model: nn.Module, fused_path: bool) -> None:
        for module in model.modules():
            if isinstance(module, self.Mamba2):
                module.use_mem_eff_path = fused_path


def compile_definitions(path: Path, names: tuple[str, ...], namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute only the top-level functions / classes `names` of a real source file.

    Their line numbers stay those of the file, so tracebacks point into mamba's source.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    picked = [node for node in tree.body
              if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names]
    missing = set(names) - {node.name for node in picked}
    if missing:
        raise RuntimeError(f"{path} no longer defines {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=picked, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def new_module(name: str, namespace: Mapping[str, Any], origin: str) -> types.ModuleType:
    module = types.ModuleType(name, f"CPU stand-in for {name}, built from {origin}")
    module.__dict__.update(namespace)
    return module


def causal_conv1d_fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     seq_idx: Any = None, initial_states: Any = None, return_final_states: bool = False,
                     final_states_out: Any = None, activation: str | None = None) -> torch.Tensor:
    """Stand-in for the causal-conv1d CUDA package: x (b, d, l), weight (d, width)."""
    if seq_idx is not None or initial_states is not None or return_final_states:
        raise NotImplementedError("the CPU causal_conv1d stand-in supports plain sequences only")
    width = weight.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(out) if activation in ("silu", "swish") else out


def layer_norm_stand_in(mamba_file: Path) -> types.ModuleType:
    ns = compile_definitions(mamba_file, ("layer_norm_ref", "rms_norm_ref", "RMSNorm"),
                             {"torch": torch, "F": F, "math": math})

    def layer_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6,
                      dropout_p=0.0, rowscale=None, prenorm=False, residual_in_fp32=False,
                      is_rms_norm=False, return_dropout_mask=False):
        if residual_in_fp32 or return_dropout_mask:
            raise NotImplementedError("residual_in_fp32 / return_dropout_mask: not needed by MSST's model")
        reference = ns["rms_norm_ref"] if is_rms_norm else ns["layer_norm_ref"]
        return reference(x, weight, bias, residual=residual, x1=x1, weight1=weight1, bias1=bias1, eps=eps,
                         dropout_p=dropout_p, rowscale=rowscale, prenorm=prenorm, upcast=True)

    def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6,
                    dropout_p=0.0, rowscale=None, prenorm=False, residual_in_fp32=False,
                    return_dropout_mask=False):
        return layer_norm_fn(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale,
                             prenorm, residual_in_fp32, True, return_dropout_mask)

    ns.update(layer_norm_fn=layer_norm_fn, rms_norm_fn=rms_norm_fn)
    return new_module("mamba_ssm.ops.triton.layer_norm", ns, str(mamba_file))


def layernorm_gated_stand_in(mamba_file: Path, rearrange: Any) -> types.ModuleType:
    ns = compile_definitions(mamba_file, ("rms_norm_ref", "RMSNorm", "LayerNorm"),
                             {"torch": torch, "F": F, "math": math, "rearrange": rearrange})

    def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        return ns["rms_norm_ref"](x, weight, bias, z=z, eps=eps, group_size=group_size,
                                  norm_before_gate=norm_before_gate, upcast=True)

    def layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                     is_rms_norm=False):
        if not is_rms_norm:
            raise NotImplementedError("gated LayerNorm has no reference implementation in mamba-ssm")
        return rmsnorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate)

    ns.update(rmsnorm_fn=rmsnorm_fn, layernorm_fn=layernorm_fn)
    return new_module("mamba_ssm.ops.triton.layernorm_gated", ns, str(mamba_file))


def selective_scan_stand_in(mamba_file: Path, rearrange: Any, repeat: Any) -> types.ModuleType:
    ns = compile_definitions(mamba_file, ("selective_scan_ref",),
                             {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat})

    def mamba_inner_fn(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Mamba-1 (module_type 'mamba') has no CPU stand-in here")

    ns.update(selective_scan_fn=ns["selective_scan_ref"], mamba_inner_fn=mamba_inner_fn)
    return new_module("mamba_ssm.ops.selective_scan_interface", ns, str(mamba_file))


def ssd_combined_stand_in(root: Path, rearrange: Any, repeat: Any, gated: types.ModuleType,
                          selective_scan: types.ModuleType) -> types.ModuleType:
    minimal = compile_definitions(root / "mamba_ssm/modules/ssd_minimal.py", ("segsum", "ssd_minimal_discrete"),
                                  {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat})
    combined_file = root / "mamba_ssm/ops/triton/ssd_combined.py"
    ns = compile_definitions(combined_file, ("ssd_selective_scan", "mamba_split_conv1d_scan_ref"),
                             {"torch": torch, "F": F, "math": math, "rearrange": rearrange, "repeat": repeat,
                              "causal_conv1d_fn": causal_conv1d_fn, "rmsnorm_fn": gated.rmsnorm_fn})

    def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                                  seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                                  return_final_states=False, return_varlen_states=False):
        """x (b l h p), dt (b l h), A (h), B/C (b l g n) -> (b l h p), via ssd_minimal_discrete."""
        if any(v is not None for v in (initial_states, seq_idx, cu_seqlens)) or return_final_states \
                or return_varlen_states:
            raise NotImplementedError("the CPU scan stand-in supports plain sequences only")
        batch, length, heads, _ = x.shape
        dt = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
        if dt_softplus:
            dt = F.softplus(dt)
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
        pad = (-length) % chunk_size
        x32 = x.float()
        groups_to_heads = heads // B.shape[2]
        B_heads = B.float().repeat_interleave(groups_to_heads, dim=2)
        C_heads = C.float().repeat_interleave(groups_to_heads, dim=2)
        padded = [F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x32 * dt.unsqueeze(-1), B_heads, C_heads)]
        y, _ = minimal["ssd_minimal_discrete"](padded[0], F.pad(A.float() * dt, (0, 0, 0, pad)),
                                               padded[1], padded[2], chunk_size)
        y = y[:, :length]
        if D is not None:
            y = y + x32 * (D.float() if D.dim() == 2 else D.float()[:, None])
        if z is not None:
            y = y * F.silu(z.float())
        return y.to(x.dtype)

    def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                         initial_states=None, seq_idx=None, dt_limit=(0.0, float("inf")),
                                         return_final_states=False, activation="silu", rmsnorm_weight=None,
                                         rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None,
                                         ngroups=1, norm_before_gate=True):
        if initial_states is not None or seq_idx is not None or return_final_states:
            raise NotImplementedError("the CPU fused-path stand-in supports plain sequences only")
        # mamba's reference imports selective_scan_fn inside the function body.
        with installed_modules({"mamba_ssm.ops.selective_scan_interface": selective_scan}):
            return ns["mamba_split_conv1d_scan_ref"](
                zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, dt_limit=dt_limit,
                activation=activation, rmsnorm_weight=rmsnorm_weight, rmsnorm_eps=rmsnorm_eps,
                outproj_weight=outproj_weight, outproj_bias=outproj_bias, headdim=headdim, ngroups=ngroups,
                norm_before_gate=norm_before_gate)

    ns.update(mamba_chunk_scan_combined=mamba_chunk_scan_combined,
              mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined)
    return new_module("mamba_ssm.ops.triton.ssd_combined", ns, f"{combined_file} and ssd_minimal.py")


@contextlib.contextmanager
def installed_modules(modules: Mapping[str, types.ModuleType | None]) -> Iterator[None]:
    """Put `modules` into sys.modules (None = import fails) and restore what was there after."""
    saved = {name: sys.modules.get(name, _ABSENT) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


_ABSENT = object()


# Top-level names whose sys.modules entries loading may add or replace; all are put back.
SCOPED_TOP_LEVEL_NAMES = ("mamba_ssm", "msst", "models", "causal_conv1d", "huggingface_hub")


@contextlib.contextmanager
def restored_import_state() -> Iterator[None]:
    """Undo sys.path and the sys.modules entries under SCOPED_TOP_LEVEL_NAMES changed inside.

    Other modules imported meanwhile (einops, rotary_embedding_torch) stay: MSST's code
    calls into them later.
    """
    saved_modules = {name: module for name, module in sys.modules.items()
                     if name.split(".")[0] in SCOPED_TOP_LEVEL_NAMES}
    saved_path = list(sys.path)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in SCOPED_TOP_LEVEL_NAMES]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_reference(mamba_root: Path, msst: MsstSource, extra_wheels: list[Path]) -> MambaReference:
    """Load mamba-ssm's and MSST's real modules (see the module docstring)."""
    with restored_import_state():
        sys.path[:0] = [str(wheel) for wheel in extra_wheels]  # pure-Python wheels import from the zip
        for wheel in extra_wheels:
            zipfile.ZipFile(wheel).close()  # fail early on a broken download
        from einops import rearrange, repeat

        package_root = mamba_root / "mamba_ssm"
        for suffix in MAMBA_PACKAGES:
            name = "mamba_ssm" + suffix
            package = types.ModuleType(name, "namespace only: the real __init__ imports CUDA code")
            package.__path__ = [str(package_root / suffix.strip(".").replace(".", "/"))]
            sys.modules[name] = package

        triton_dir = package_root / "ops" / "triton"
        gated = layernorm_gated_stand_in(triton_dir / "layernorm_gated.py", rearrange)
        selective_scan = selective_scan_stand_in(package_root / "ops" / "selective_scan_interface.py",
                                                 rearrange, repeat)
        stand_ins: dict[str, types.ModuleType | None] = {
            "causal_conv1d": None,
            "causal_conv1d.causal_conv1d_varlen": None,
            "mamba_ssm.ops.triton.selective_state_update": None,
            "mamba_ssm.ops.triton.layer_norm": layer_norm_stand_in(triton_dir / "layer_norm.py"),
            "mamba_ssm.ops.triton.layernorm_gated": gated,
            "mamba_ssm.ops.triton.ssd_combined": ssd_combined_stand_in(mamba_root, rearrange, repeat, gated,
                                                                       selective_scan),
            "mamba_ssm.ops.selective_scan_interface": selective_scan,
            "mamba_ssm.utils.generation": new_module(
                "mamba_ssm.utils.generation", {"GenerationMixin": type("GenerationMixin", (), {})},
                "nothing (only MambaLMHeadModel uses it)"),
            "mamba_ssm.utils.hf": new_module(
                "mamba_ssm.utils.hf", {"load_config_hf": None, "load_state_dict_hf": None},
                "nothing (only MambaLMHeadModel uses it)"),
        }
        if importlib.util.find_spec("huggingface_hub") is None:
            stand_ins["huggingface_hub"] = new_module(
                "huggingface_hub", {"PyTorchModelHubMixin": type("PyTorchModelHubMixin", (), {})},
                "nothing (Mamba2 only inherits hub upload helpers from it)")
        sys.modules.update(stand_ins)

        loaded = {}
        for name in REAL_MAMBA_MODULES:
            loaded[name] = load_file(name, package_root.joinpath(*name.split(".")[1:]).with_suffix(".py"))

        attend = load_file(MSST_ATTEND_NAMES[0], msst.folder / "attend_mamba.py")
        sys.modules[MSST_ATTEND_NAMES[1]] = attend
        msst_module = load_file("msst.models.bs_mamba2_code.bs_mamba2", msst.folder / "bs_mamba2.py")

    return MambaReference(
        mamba2_module=loaded["mamba_ssm.modules.mamba2"],
        block_module=loaded["mamba_ssm.modules.block"],
        init_weights=loaded["mamba_ssm.models.mixer_seq_simple"]._init_weights,
        msst_module=msst_module,
        msst_origin=msst.origin,
        mamba_root=mamba_root,
    )
