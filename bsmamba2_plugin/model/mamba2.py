"""Mamba2 (Dao & Gu 2024) with the parameters of `mamba_ssm.modules.mamba2.Mamba2`.

Parameter names, shapes and initialisation are mamba-ssm's, so a state dict moves between
this module and mamba-ssm's unchanged. The forward pass runs mamba-ssm's fused kernels for
CUDA tensors when mamba-ssm imports (see `backend.py`), and otherwise the PyTorch SSD scan
of `ssd.py`.

    u -> in_proj -> [z | xBC | dt]
    xBC -> causal depthwise conv1d -> SiLU -> [x | B | C]
    y = SSD(x, dt = softplus(dt + dt_bias), A = -exp(A_log), B, C) + D * x
    out = out_proj(rmsnorm(y * silu(z)) * norm.weight)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .backend import check_backend, mamba_ssm_kernels, use_mamba_ssm
from .linear_weight import bias_free_weights, effective_bias, effective_weight
from .projection import project
from .ssd import needs_gradients, padded_length, ssd_chunked, ssd_graph

# The PyTorch scan's chunk length. It is not a weight: any chunk gives the same result up to
# rounding. On CPU short chunks win (the quadratic part grows with Q); benchmarks/ measures it.
TORCH_CHUNK_SIZE = 64


def fp32_or_wider(t: Tensor) -> Tensor:
    """bf16/fp16 -> fp32 for the numerically delicate parts; float64 stays float64."""
    return t.to(fp32_or_wider_dtype(t.dtype))


def fp32_or_wider_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class RMSNorm(nn.Module):
    """mamba-ssm's RMSNorm (`ops.triton.layer_norm.RMSNorm`): x / rms(x) * weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = fp32_or_wider(x)
        return (x32 * inv_rms(x32, -1, self.eps) * fp32_or_wider(self.weight)).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """mamba-ssm's gated RMSNorm with norm_before_gate=False: rmsnorm(y * silu(z)) per group."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        return gated_rmsnorm(y, z, self.weight, self.group_size, self.eps)


def gated_rmsnorm(y: Tensor, z: Tensor, weight: Tensor, group_size: int, eps: float) -> Tensor:
    return group_rmsnorm(fp32_or_wider(y) * F.silu(fp32_or_wider(z)), weight, group_size, eps).to(z.dtype)


def group_rmsnorm(x: Tensor, weight: Tensor, group_size: int, eps: float) -> Tensor:
    grouped = x.unflatten(-1, (-1, group_size))
    return (grouped * inv_rms(grouped, -1, eps)).flatten(-2) * fp32_or_wider(weight)


def inv_rms(x: Tensor, dim: int, eps: float) -> Tensor:
    """1 / sqrt(mean(x^2) + eps) along `dim`, kept as a size-1 axis, in fp32 or wider: the norm of
    every RMSNorm here. From one read of x (vector_norm keeps no squares); for bf16 x the sum is
    accumulated in fp32 and rounded once (asking vector_norm for an fp32 result copies the input).
    Traced for export, the mean of the squares instead: onnxruntime's ReduceL2 over a middle axis
    (the gated norm of `graph_mixer`) took 1.3-1.5x the time of Mul and ReduceMean."""
    if torch.compiler.is_exporting():
        return torch.rsqrt((x * x).mean(dim, keepdim=True) + eps)
    norm = fp32_or_wider(torch.linalg.vector_norm(x, dim=dim, keepdim=True))
    return torch.rsqrt(norm.square() / x.shape[dim] + eps)


HEADDIM = 64  # mamba-ssm's default head size


class Mamba2(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = HEADDIM,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        chunk_size: int = 256,
        backend: str | None = None,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"expand * d_model = {self.d_inner} is not a multiple of headdim = {headdim}")
        self.headdim, self.ngroups = headdim, ngroups
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"{self.nheads} heads cannot be split into ngroups = {ngroups}")
        self.chunk_size = chunk_size  # used by mamba-ssm's kernels
        self.torch_chunk_size = TORCH_CHUNK_SIZE
        self.backend = None if backend is None else check_backend(backend)
        self.layer_idx = layer_idx

        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1)

        # mamba-ssm's initialisation: dt log-uniform in [dt_min, dt_max] stored through the
        # inverse softplus, A uniform in A_init_range stored as log, D = 1.
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.empty(self.nheads).uniform_(*A_init_range).log())
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, length, d_model) -> (batch, length, d_model)."""
        if use_mamba_ssm(self.backend, u):
            return self.forward_mamba_ssm(u)
        w_in = bias_free_weights([self.in_proj], "in_proj")  # LoRA included
        if torch.compiler.is_exporting():
            return graph_mixer(self, u.flatten(0, -3), w_in[0]).view(u.shape)
        return mix_and_project(self, *in_projections(self, u.flatten(0, -2), w_in[0], u.shape[:-1]))

    def forward_mamba_ssm(self, u: Tensor) -> Tensor:
        """The same computation through mamba-ssm's kernels (CUDA tensors only)."""
        kernels = mamba_ssm_kernels()
        zxbcdt = self.in_proj(u)
        A = -torch.exp(self.A_log.float())
        if kernels.split_conv1d_scan is not None:  # mamba-ssm's default fused path
            return kernels.split_conv1d_scan(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A,
                D=self.D, chunk_size=self.chunk_size, activation="silu",
                rmsnorm_weight=self.norm.weight, rmsnorm_eps=self.norm.eps,
                outproj_weight=effective_weight(self.out_proj), outproj_bias=effective_bias(self.out_proj),
                headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False,
            )
        # Without causal-conv1d mamba-ssm itself falls back to nn.Conv1d and the Triton scan.
        z, xBC, dt = zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC = causal_conv_silu(xBC, self.conv1d.weight.squeeze(1), self.conv1d.bias)
        x, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        y = kernels.chunk_scan(
            x.unflatten(-1, (self.nheads, self.headdim)), dt, A,
            B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state)),
            chunk_size=self.chunk_size, D=self.D, z=None, dt_bias=self.dt_bias, dt_softplus=True,
        )
        return self.out_proj(self.norm(y.flatten(-2), z))


def causal_conv_silu(xBC: Tensor, weight: Tensor, bias: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """SiLU of the depthwise causal conv, in `dtype` (default xBC's). xBC: (b, l, ch); weight: (ch, d_conv);
    bias: (ch,).

    Eagerly, one depthwise conv2d over (b, ch, 1, l) seen in channels-last layout, which is xBC's
    own (l, ch) layout: no transposes, and oneDNN's depthwise kernel runs 2x (fp32) to 6x (bf16)
    faster than d_conv shifted multiply-adds (measured on (62, 256, 1280)). Without gradients on
    CPU the SiLU is oneDNN's post-op of the same kernel (the op inductor emits): one pass fewer
    over the output, 23 ms against 33 ms (bf16) and 41 ms (fp32) on (62, 832, 1280). The result
    is a view of the conv's output, (b, l, ch) with the channels contiguous.
    """
    _, l, ch = xBC.shape
    d_conv = weight.shape[-1]
    dtype = dtype or xBC.dtype
    # Cast (where asked) and laid out channels-last in one step: under torch.compile a separate cast
    # before the view came out with a zero stride on the size-1 axis, which oneDNN takes for NCHW, and
    # the compiled bf16 step's forward convs took 0.69 s instead of 0.14 s (paper model, 1 s).
    images = xBC.transpose(1, 2).unsqueeze(2).to(dtype, memory_format=torch.channels_last)
    kernels, bias = weight[:, None, None].to(dtype), bias.to(dtype)
    # Padding d_conv - 1 on both ends; the first l outputs are the causal ones.
    if (xBC.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled()
            and _onednn_pointwise_conv() is not None):  # (oneDNN has no float64 kernels)
        conv = _onednn_pointwise_conv()(images, kernels, bias, [0, d_conv - 1], [1, 1], [1, 1], ch, "swish", [], "")
        return conv[..., :l].squeeze(2).transpose(1, 2)  # (b ch 1 l+d_conv-1) -> (b l ch)
    if torch.is_grad_enabled():
        conv = (CompiledCausalConv if torch.compiler.is_compiling() else CausalConv).apply(images, kernels, bias)
        # The SiLU on the (b l ch) view: on the 4D conv output its backward ran 10x slower (strides that
        # defeat the vectorised loop: 32 ms against 3 ms on (346, 512, 1, 35) in fp32).
        return F.silu(conv)
    return F.silu(_causal_conv(images, kernels, bias), inplace=True)


def _causal_conv(images: Tensor, kernels: Tensor, bias: Tensor) -> Tensor:
    """images (b, ch, 1, l), kernels (ch, 1, 1, d_conv) -> (b, l, ch): padded d_conv - 1 on both ends, the
    first l outputs are the causal ones."""
    d_conv, l = kernels.shape[-1], images.shape[-1]
    conv = F.conv2d(images, kernels, bias, padding=(0, d_conv - 1), groups=images.shape[1])
    return conv[..., :l].squeeze(2).transpose(1, 2)


class CausalConv(torch.autograd.Function):
    """The causal depthwise conv of `causal_conv_silu` in an eager training step: images (b, ch, 1, l)
    channels-last, kernels (ch, 1, 1, d_conv), bias (ch,) -> (b, l, ch).

    Forward: oneDNN's kernel, as without gradients. Backward: the input's gradient as the forward
    conv of the gradient with the kernel reversed, the kernel's from oneDNN's weight gradient
    alone, the bias's as a sum. Through autograd the conv's backward (oneDNN's combined kernel),
    the zero-filled gradient of the cropped output and a contiguous copy of it took 59 ms against
    40 ms on (62, 128, 1280) and 470-550 ms against 290 ms on (62, 832, 1280) (fp32, forward and
    backward with the SiLU, 2-core AMX Xeon).
    """

    @staticmethod
    def forward(ctx: Any, images: Tensor, kernels: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(images, kernels)
        with torch.autocast(images.device.type, enabled=False):  # the output in the inputs' dtype, as the backward's
            return _causal_conv(images, kernels, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        images, kernels = ctx.saved_tensors
        channels, d_conv = kernels.shape[0], kernels.shape[-1]
        # out_t = bias + sum_k w_k x_(t + k - shift): x_s gets sum_k w_k grad_(s - k + shift).
        grad_images = grad.transpose(1, 2).unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (b ch 1 l)
        grad_x = grad_w = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad_images, kernels.flip(-1), None, padding=(0, d_conv - 1),
                              groups=channels)[..., d_conv - 1:]
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad_images, F.pad(images, (d_conv - 1, 0)), kernels, None, [1, 1], [0, 0], [1, 1], False, [0, 0],
                channels, [False, True, False])[1]
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 1))
        return grad_x, grad_w, grad_bias


class CompiledCausalConv(CausalConv):
    """`CausalConv` inside a compiled training step. Its backward is the d_conv shifted multiply-adds
    the conv stands for, which inductor fuses with SiLU's backward around them. oneDNN's depthwise
    backward took 0.65 s of the compiled bf16 step (paper model, 1 s); with this backward the step
    took 5.05-5.16 s against 5.20-5.55 s (two runs each, alternating, 2-core AMX Xeon). Eagerly each
    shifted product would be a pass of its own.
    """

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # out_t = bias + sum_k w_k x_(t + k - shift), with x_s = 0 before the start
        images, kernels = ctx.saved_tensors
        x, w = images.squeeze(2).transpose(1, 2), kernels[:, 0, 0]  # (b l ch), (ch d_conv)
        d_conv, l = w.shape[-1], x.shape[1]
        shift = d_conv - 1
        grad_after = F.pad(grad, (0, 0, 0, shift))  # no output past the end
        x_before = F.pad(x, (0, 0, shift, 0))
        grad_x = sum(w[:, k] * grad_after[:, shift - k:shift - k + l] for k in range(d_conv))
        grad_w = torch.stack([(grad * x_before[:, k:k + l]).sum((0, 1)) for k in range(d_conv)], dim=-1)
        return grad_x.transpose(1, 2).unsqueeze(2), grad_w[:, None, None], grad.sum((0, 1))


@functools.lru_cache(maxsize=None)
def _onednn_pointwise_conv():
    """torch's oneDNN convolution with a fused activation, where this build of torch has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_convolution_pointwise", None)


def in_projections(m: Mamba2, x: Tensor, w_in: Tensor, batch_shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """in_proj of mixer m: x (tokens, d_model), w_in (d_in_proj, d_model) -> z, xBC, dt, each
    (*batch_shape, width). One product per part, so that each comes out dense: the depthwise conv
    reads a dense xBC 2x faster than a column slice of the whole projection (measured in bf16 and
    fp32), and in training no split's backward copies the three gradients into one."""
    w = w_in.to(x.dtype)
    conv_end = m.d_inner + m.conv_dim
    return tuple(project(x, w[start:stop]).view(*batch_shape, stop - start)  # type: ignore[return-value]
                 for start, stop in ((0, m.d_inner), (m.d_inner, conv_end), (conv_end, w.shape[0])))


def both_directions(x: Tensor, mixers: Sequence[Mamba2], norm_weights: Sequence[Tensor], eps: float,
                    merge_weight: Tensor, merge_bias: Tensor | None) -> Tensor:
    """The bidirectional block on the PyTorch path: two pre-norm residual blocks, x + Mamba2(RMSNorm(x)),
    one on x and one on x reversed in time, concatenated (the second flipped back), merged by the
    linear map merge_weight (d, 2 d), merge_bias, plus x: (b, l, d) -> (b, l, d).

    RMSNorm's weight folds into in_proj, so both directions project x / rms(x) (one normalisation);
    the reversed direction gets the time-reversed input. In float32 the merge, being linear, folds
    its halves into the out_proj of their direction and, for the residuals, into one (d x d) map of
    x: merge([x + o_f, x + o_b]) = x (W_f + W_b)^T + o_f W_f^T + o_b W_b^T + bias, with
    o W^T = y (W out_proj)^T. That spares the concatenation and half the merge's product (paper
    model, 8 s, fp32: 3.5 % faster). Under autocast the merge stays one product over the
    concatenation: there each folded term would be rounded to 16 bits on its own (bf16 output
    37.0 dB from fp32 against 38.5 dB).
    """
    b, l, d = x.shape
    x32 = fp32_or_wider(x)
    x_hat = (x32 * inv_rms(x32, -1, eps)).to(x.dtype)
    # Padding at the end of each direction's own sequence is causal-safe: cropped below.
    # Training's scan takes a shorter last chunk; inference's works on whole chunks.
    ragged = needs_gradients(x, *norm_weights, *(p for m in mixers for p in m.parameters()))
    padded = padded_length(l, mixers[0].torch_chunk_size, ragged=ragged)
    # (d d) each, forward and backward; slices, which onnxruntime folds into constants where it left a
    # Split's outputs as computed (and out_proj's weight unpacked, 15 % slower).
    merge_halves = (merge_weight[:, :d], merge_weight[:, d:])
    fold = not torch.is_autocast_enabled(x.device.type)
    if torch.compiler.is_exporting():  # float32: export_onnx traces with autocast off
        return x + F.linear(x, merge_halves[0] + merge_halves[1], merge_bias) + _graph_pair(
            x_hat, mixers, norm_weights, merge_halves, padded)
    outputs = []
    for m, norm_weight, merge_half, inputs in zip(mixers, norm_weights, merge_halves, (x_hat, x_hat.flip(1))):
        inputs = F.pad(inputs, (0, 0, 0, padded - l))  # (b padded d)
        w_in, w_out = _direction_weights(m, norm_weight, merge_half if fold else None)
        out = mix_and_project(m, *in_projections(m, inputs.view(b * padded, d), w_in, (b, padded)), w_out=w_out)
        outputs.append(out[:, :l])
    if fold:
        return x + project(x, merge_halves[0] + merge_halves[1], merge_bias) + outputs[0] + outputs[1].flip(1)
    return x + project(torch.cat([x + outputs[0], x + outputs[1].flip(1)], dim=-1), merge_weight, merge_bias)


def _direction_weights(m: Mamba2, norm_weight: Tensor, merge_half: Tensor | None) -> tuple[Tensor, Tensor]:
    """One direction's effective in_proj weight, its block's RMSNorm weight folded in, and out_proj's,
    merge_half (d, d) folded in unless None. Effective (linear_weight.py): LoRA adapters included."""
    w_in = bias_free_weights([m.in_proj], "in_proj")[0] * norm_weight
    w_out = out_proj_weight(m)
    return w_in, w_out if merge_half is None else merge_half @ w_out


def _graph_pair(x_hat: Tensor, mixers: Sequence[Mamba2], norm_weights: Sequence[Tensor],
                merge_halves: Sequence[Tensor], padded: int) -> Tensor:
    """`both_directions`' two mixers, the merge folded into their out_proj, in the form the ONNX export
    traces: x_hat (b, l, d) -> their summed outputs (b, l, d). onnxruntime copies for every flip, pad
    and crop (no views): here the reversed input is one Gather of the padded one, and the reversed
    output is gathered onto the forward one before the one crop, 4 copies where there were 6."""
    l = x_hat.shape[1]
    forward = F.pad(x_hat, (0, 0, 0, padded - l))
    # the steps reversed, the padding (zeros) left at the end
    # (a list: torch.arange exports as a Range onnxruntime cannot fold, and warns about)
    order = torch.tensor([*range(l - 1, -1, -1), *range(l, padded)], device=x_hat.device)
    outputs = []
    for m, norm_weight, merge_half, inputs in zip(mixers, norm_weights, merge_halves,
                                                  (forward, forward.index_select(1, order))):
        outputs.append(graph_mixer(m, inputs, *_direction_weights(m, norm_weight, merge_half)))
    return (outputs[0] + outputs[1].index_select(1, order))[:, :l]


def mix_and_project(m: Mamba2, z: Tensor, xBC: Tensor, dt: Tensor, w_out: Tensor | None = None) -> Tensor:
    """Mamba2 after in_proj (conv, scan, gated norm, out_proj): z, xBC, dt (b, l, width) from
    `in_projections` -> (b, l, d_out). w_out (d_out, d_inner): the output projection, default the
    mixer's out_proj (LoRA included); `both_directions` passes it with the merge folded in.

    When gradients are needed, only the projections are kept for the backward, which runs conv,
    scan and norm again, as mamba-ssm's fused kernel does: the scan's intermediates are about seven
    times their size, and the paper's batch of 5 x 8 s would not fit a GPU with them.
    """
    if w_out is None:
        w_out = out_proj_weight(m)
    inputs = (z, xBC, dt, w_out)
    if needs_gradients(*inputs, *m.parameters()):
        # Nothing inside draws random numbers: no RNG state to keep for the rerun.
        return checkpoint(_mix_and_project, m, *inputs, use_reentrant=False, preserve_rng_state=False)
    return _mix_and_project(m, *inputs)


def _mix_and_project(m: Mamba2, z: Tensor, xBC: Tensor, dt: Tensor, w_out: Tensor) -> Tensor:
    """One mixer after in_proj: z, xBC, dt (b, l, width), out projection w_out -> (b, l, d_out)."""
    g, n, h, p = m.ngroups, m.d_state, m.nheads, m.headdim
    # The scan's products run in the activations' dtype, bf16 under bf16 autocast, in training as in
    # inference: as in mamba-ssm's kernels, whose conv hands the scan bf16 x, B, C; the decays, dt and
    # D stay fp32 (see ssd.py). fp16 activations get an fp32 scan. Each bf16 tensor is cast once where
    # it enters fp32 work: on CPU an op that mixes bf16 and fp32 operands runs outside the vectorised loops.
    scan_dtype = torch.bfloat16 if z.dtype == torch.bfloat16 else fp32_or_wider_dtype(z.dtype)
    with torch.autocast(device_type=z.device.type, enabled=False):
        # The conv and its SiLU in the scan's dtype, except in training: there in fp32 and cast after, as
        # oneDNN's bf16 depthwise backward is 2x slower (paper width, 1 s, bf16 step: 6.3-6.5 s against
        # 5.9-6.0 s with the fp32 conv, 2-core AMX Xeon).
        training = needs_gradients(z, xBC, dt, *m.parameters())
        xBC = causal_conv_silu(xBC, m.conv1d.weight.squeeze(1), m.conv1d.bias,
                               fp32_or_wider_dtype(xBC.dtype) if training else scan_dtype).to(scan_dtype)
        x, B, C = xBC.split([m.d_inner, g * n, g * n], dim=-1)
        x, B, C = x.unflatten(-1, (h, p)), B.unflatten(-1, (g, n)), C.unflatten(-1, (g, n))
        dt = F.softplus(fp32_or_wider(dt) + fp32_or_wider(m.dt_bias))  # (b l h)
        a = dt * -torch.exp(fp32_or_wider(m.A_log))
        # The gate inside the scan, as mamba-ssm's chunk scan takes z: on each block while in cache.
        gated = ssd_chunked(x, a, B, C, m.torch_chunk_size, dt=dt, D=fp32_or_wider(m.D),
                            z=z.unflatten(-1, (h, p))).flatten(-2)

    w_proj = projection_after_norm(m, w_out).to(z.dtype)
    if g > 1:
        normed = group_rmsnorm(fp32_or_wider(gated), m.norm.weight, m.norm.group_size, m.norm.eps)
        return project(normed.to(z.dtype), w_proj.t())
    out = project(gated.to(z.dtype), w_proj.t())
    return (fp32_or_wider(out) * inv_rms(gated, -1, m.norm.eps)).to(z.dtype)


def out_proj_weight(m: Mamba2) -> Tensor:
    """out_proj's effective weight (d_model, d_inner), LoRA included (linear_weight.py)."""
    return bias_free_weights([m.out_proj], "out_proj")[0]


def projection_after_norm(m: Mamba2, w_out: Tensor) -> Tensor:
    """The output projection w_out (d_out, d_inner) as the gated norm's output meets it, (d_inner, d_out).
    With one group the norm's weight is folded in, and its per-token scale, which commutes with the
    product, is left for the caller to apply to the 4x narrower output: neither then passes over the
    d_inner activations."""
    return (w_out * m.norm.weight).t() if m.ngroups == 1 else w_out.t()


def graph_mixer(m: Mamba2, u: Tensor, w_in: Tensor, w_out: Tensor | None = None) -> Tensor:
    """One mixer in the form the ONNX export traces: u (b, l, d_model) -> (b, l, d_out); w_in
    (d_in_proj, d_model) is in_proj's effective weight (LoRA and a folded norm weight included),
    w_out (d_out, d_inner) the output projection (default: out_proj's, as in `mix_and_project`).

    Channels first from in_proj to out_proj, because onnxruntime's time goes to passes over the
    activations: each part of in_proj is its own product W (b, d_model, l) -> (b, width, l), so no
    slice copies them, and `ssd_graph` takes x, B, C in that layout and works a block of sequences at
    a time: x's causal depthwise conv as ONNX's Conv, the scan, then the gated norm and out_proj on
    the block's chunk-major y as it lies, so that neither the conv's output nor y is written out for
    all sequences (paper model at 8 s: 3 % and 6 % faster). Only the d_model-wide input and output
    are transposed, the output only where the blocks' order is not already the time order. Measured
    on a 2 s chunk, one time-axis layer: onnxruntime's Conv on (b, ch, l) 14 ms against 59 ms with the
    transposes around it.
    """
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    g, n, h, p = m.ngroups, m.d_state, m.nheads, m.headdim
    b, l, _ = u.shape
    u_t = u.transpose(1, 2)  # (b d_model l)
    x_end, b_end, conv_end = m.d_inner, m.d_inner + g * n, m.conv_dim

    def project(start: int, stop: int) -> Tensor:
        return w_in[start:stop] @ u_t  # (b stop-start l)

    z = project(0, m.d_inner).view(b, h, p, l)
    x = project(m.d_inner, m.d_inner + x_end).view(b, h, p, l)
    B = project(m.d_inner + x_end, m.d_inner + b_end).view(b, g, n, l)
    C = project(m.d_inner + b_end, m.d_inner + conv_end).view(b, g, n, l)
    dt = F.softplus(project(m.d_inner + conv_end, w_in.shape[0]) + m.dt_bias[:, None])  # (b h l)
    a = dt * -torch.exp(m.A_log)[:, None]
    if w_out is None:
        w_out = out_proj_weight(m)
    w_proj = projection_after_norm(m, w_out)  # (d_inner d_out)

    def norm_and_project(y: Tensor) -> Tensor:
        """A block's gated y (c k h p q), or (k h p q) for one chunk -> (c k q d_out)."""
        k, q = y.shape[-4], y.shape[-1]
        gated = y.reshape(-1, k, g, h * p // g, q)  # one Reshape: an Unsqueeze for c = 1 was a copy
        c = gated.shape[0]
        scale = inv_rms(gated, 3, m.norm.eps)  # (c k g 1 q): per group
        if g > 1:
            normed = (gated * scale).view(c, k, h * p, q) * m.norm.weight[:, None]
            return normed.transpose(-1, -2) @ w_proj
        return (gated.view(c, k, h * p, q).transpose(-1, -2) @ w_proj) * scale.view(c, k, q, 1)

    # x, B, C before the causal conv, which `ssd_graph` runs (x's in its blocks)
    out = ssd_graph(x, a, B, C, m.torch_chunk_size, dt=dt, D=m.D, z=z, conv=(m.conv1d.weight, m.conv1d.bias),
                    epilogue=norm_and_project)  # (r c k q d_out)
    c, k, q = out.shape[1:4]
    if c > 1 and not statically_known_true(k == 1):  # else the order is already (b c q): onnxruntime would copy
        out = out.transpose(1, 2)  # whole (q x d_model) blocks move: cheap in onnxruntime
    out = out.reshape(b, c * q, -1)
    return out if c * q == l else out[:, :l]
