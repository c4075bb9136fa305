"""The PyTorch Mamba2: mamba-ssm's parameters, the recurrence it computes, dtypes, backends."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bsmamba2_plugin.model import backend, mamba2
from bsmamba2_plugin.model.bsmamba2 import BidirectionalMamba
from bsmamba2_plugin.model.mamba2 import Mamba2


def test_parameters_are_mamba_ssm_s_for_the_paper_settings() -> None:
    layer = Mamba2(256, expand=4)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    # d_inner 1024, 16 heads of 64, d_state 128, 1 group: in_proj = z + xBC + dt = 1024 + 1280 + 16.
    assert shapes == {
        "dt_bias": (16,), "A_log": (16,), "D": (16,),
        "in_proj.weight": (2320, 256),
        "conv1d.weight": (1280, 1, 4), "conv1d.bias": (1280,),
        "norm.weight": (1024,),
        "out_proj.weight": (256, 1024),
    }
    assert layer.chunk_size == 256 and layer.d_conv == 4
    dt = F.softplus(layer.dt_bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6  # dt in [1e-3, 0.1], floored at 1e-4
    assert (-layer.A_log.exp()).max() <= -1 and (-layer.A_log.exp()).min() >= -16  # A_init_range (1, 16)


def mamba2_by_recurrence(layer: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """Mamba2's forward written out step by step, independently of the module's code."""
    zxbcdt = u @ layer.in_proj.weight.T
    d_inner, n, h, p, g = layer.d_inner, layer.d_state, layer.nheads, layer.headdim, layer.ngroups
    z, xBC, dt = zxbcdt.split([d_inner, d_inner + 2 * g * n, h], dim=-1)
    length = u.shape[1]
    w = layer.conv1d.weight[:, 0]  # (channels, 4): tap 3 is the current step
    conv = torch.stack([
        layer.conv1d.bias + sum(w[:, 3 - k] * xBC[:, t - k] for k in range(4) if t - k >= 0) for t in range(length)
    ], dim=1)
    xBC = F.silu(conv)
    x, B, C = xBC.split([d_inner, g * n, g * n], dim=-1)
    B = B.unflatten(-1, (g, n)).repeat_interleave(h // g, dim=2)  # (b l h n): each head its group's B
    C = C.unflatten(-1, (g, n)).repeat_interleave(h // g, dim=2)
    dt = F.softplus(dt + layer.dt_bias)
    A = -layer.A_log.exp()
    state = u.new_zeros(u.shape[0], h, p, n)
    ys = []
    for t in range(length):
        xt = x[:, t].view(-1, h, p)
        state = state * torch.exp(dt[:, t] * A)[..., None, None] + (dt[:, t, :, None] * xt)[..., None] * B[:, t, :, None]
        ys.append((state * C[:, t, :, None]).sum(-1) + layer.D[:, None] * xt)
    y = (torch.stack(ys, dim=1).flatten(2) * F.silu(z)).unflatten(-1, (g, -1))  # norm per group
    y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2) * layer.norm.weight
    return y @ layer.out_proj.weight.T


@pytest.mark.parametrize("length", [1, 3, 70, 129])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_forward_equals_the_recurrence(length: int, ngroups: int) -> None:
    torch.manual_seed(length)
    layer = Mamba2(32, expand=4, headdim=16, d_state=8, ngroups=ngroups, backend="torch").double()
    layer.torch_chunk_size = 16
    with torch.no_grad():
        layer.conv1d.bias.normal_()
        layer.D.normal_()
        layer.norm.weight.normal_()
    u = torch.randn(2, length, 32, dtype=torch.float64)
    expected = mamba2_by_recurrence(layer, u)
    torch.testing.assert_close(layer(u), expected, rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # the inference path (its conv is oneDNN's for float32 and bf16 only)
        torch.testing.assert_close(layer(u), expected, rtol=1e-9, atol=1e-9)
        # the form the ONNX export traces, channels first (run eagerly here)
        graph = mamba2.graph_mixer(layer, u, layer.in_proj.weight)
    torch.testing.assert_close(graph, expected, rtol=1e-9, atol=1e-9)


def test_bf16_autocast_scan_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 products (x, B, C) and gate, fp32 decays (a, dt, D), in inference and in training, as in
    mamba-ssm's kernels; without autocast everything is fp32."""
    torch.manual_seed(0)
    layer = Mamba2(64, expand=4, d_state=16, backend="torch")
    u = torch.randn(2, 100, 64)
    seen = []
    real_scan = mamba2.ssd_chunked

    def spy(x, a, B, C, chunk_size, dt, D, z):
        seen.append({"x": x.dtype, "B": B.dtype, "C": C.dtype, "a": a.dtype, "dt": dt.dtype, "D": D.dtype, "z": z.dtype})
        return real_scan(x, a, B, C, chunk_size, dt=dt, D=D, z=z)

    monkeypatch.setattr(mamba2, "ssd_chunked", spy)
    with torch.no_grad():
        reference = layer(u)
    bf16, fp32 = torch.bfloat16, torch.float32
    expected = {"x": bf16, "B": bf16, "C": bf16, "a": fp32, "dt": fp32, "D": fp32, "z": bf16}
    seen.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=bf16):
        low = layer(u)
    assert seen == [expected]
    assert torch.isfinite(low).all()
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.05
    seen.clear()
    with torch.autocast("cpu", dtype=bf16):
        low = layer(u)
        low.float().sum().backward()
    assert seen and all(call == expected for call in seen)  # the forward and its rerun for the backward
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.05
    bf16_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    seen.clear()
    layer(u).sum().backward()
    assert seen and all(set(call.values()) == {fp32} for call in seen)
    for p, bf16_grad in zip(layer.parameters(), bf16_grads):
        assert torch.isfinite(bf16_grad).all()
        assert ((bf16_grad - p.grad).norm() / p.grad.norm()).item() < 0.02


def test_silence_gives_no_nan() -> None:
    layer = Mamba2(64, expand=4, d_state=16, backend="torch")
    u = torch.zeros(2, 300, 64, requires_grad=True)
    out = layer(u)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(u.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_backend_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_tensor = torch.zeros(1)
    monkeypatch.setenv(backend.ENV_VAR, "cuda-please")
    with pytest.raises(ValueError, match="BSMAMBA2_BACKEND='cuda-please'.*auto, torch, mamba_ssm"):
        backend.use_mamba_ssm(None, cpu_tensor)
    with pytest.raises(ValueError, match="backend='fast'"):
        Mamba2(64, backend="fast")
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    assert backend.use_mamba_ssm(None, cpu_tensor) is False
    # mamba-ssm cannot be installed here: forcing it must say so and how to get it.
    monkeypatch.setattr(backend, "mamba_ssm_kernels", lambda: None)
    monkeypatch.setenv(backend.ENV_VAR, "mamba_ssm")
    with pytest.raises(RuntimeError, match="mamba_ssm cannot be imported.*pip install --no-build-isolation mamba-ssm"):
        backend.use_mamba_ssm(None, cpu_tensor)
    monkeypatch.setenv(backend.ENV_VAR, "auto")
    with pytest.raises(RuntimeError, match="mamba_ssm cannot be imported"):
        backend.use_mamba_ssm("mamba_ssm", cpu_tensor)  # the keyword wins over the variable
    assert backend.use_mamba_ssm(None, SimpleNamespace(is_cuda=True)) is False  # auto: not installed


def test_mamba_ssm_is_never_imported_on_this_machine() -> None:
    import sys

    torch.manual_seed(0)
    Mamba2(64, expand=4, d_state=16)(torch.randn(1, 10, 64))
    assert backend.mamba_ssm_kernels() is None or torch.cuda.is_available()
    assert "mamba_ssm" not in sys.modules or torch.cuda.is_available()


@pytest.fixture()
def reference_kernels(reference, monkeypatch: pytest.MonkeyPatch):
    """mamba-ssm's CUDA/Triton kernels cannot run here. In their place: mamba-ssm's own
    pure-PyTorch reference implementations of the same functions (see reference_mamba.py)."""
    module = reference.mamba2_module

    def kernels(fused: bool) -> None:
        stand_in = SimpleNamespace(chunk_scan=module.mamba_chunk_scan_combined,
                                   split_conv1d_scan=module.mamba_split_conv1d_scan_combined if fused else None)
        monkeypatch.setattr(mamba2, "mamba_ssm_kernels", lambda: stand_in)
        monkeypatch.setattr(mamba2, "use_mamba_ssm", lambda requested, tensor: requested != "torch")

    return kernels


@pytest.mark.parametrize("fused", [True, False])
def test_mamba_ssm_path_gets_the_same_weights(reference_kernels, fused: bool) -> None:
    torch.manual_seed(1)
    reference_kernels(fused)
    layer = Mamba2(64, expand=4, d_state=16)
    u = torch.randn(2, 40, 64)
    through_kernels = layer(u)
    layer.backend = "torch"
    torch.testing.assert_close(through_kernels, layer(u), rtol=2e-4, atol=2e-5)


def test_bidirectional_block_on_the_mamba_ssm_path(reference_kernels, monkeypatch: pytest.MonkeyPatch) -> None:
    import bsmamba2_plugin.model.bsmamba2 as model_module

    torch.manual_seed(2)
    reference_kernels(True)
    block = BidirectionalMamba(64, backend=None)
    x = torch.randn(3, 30, 64)
    monkeypatch.setattr(model_module, "use_mamba_ssm", lambda requested, tensor: True)
    kernels_out = block(x)
    monkeypatch.setattr(model_module, "use_mamba_ssm", lambda requested, tensor: False)
    torch.testing.assert_close(kernels_out, block(x), rtol=2e-4, atol=2e-5)


def test_backend_paths_benchmark_measures_agreement(reference_kernels, monkeypatch: pytest.MonkeyPatch,
                                                    benchmark_module) -> None:
    """benchmarks/backend_paths.py runs on a GPU only; its comparison is checked here on the
    reference stand-ins: the same weights agree, and a kernel that drops the D skip does not."""
    import bsmamba2_plugin.model.bsmamba2 as model_module
    from bsmamba2_plugin.model import BSMamba2

    compare_paths = benchmark_module("backend_paths").compare_paths

    reference_kernels(True)
    monkeypatch.setattr(model_module, "use_mamba_ssm", lambda requested, tensor: requested == "mamba_ssm")
    torch.manual_seed(3)
    model = BSMamba2(dim=32, depth=1, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
                     freqs_per_bands=(32, 32, 65)).eval()
    audio = torch.randn(1, 2, 4096) * 0.1
    agreeing = compare_paths(model, audio, None)
    assert agreeing["finite"] == 1.0 and agreeing["sdr_db"] > 60, agreeing

    real_scan = mamba2.mamba_ssm_kernels().split_conv1d_scan

    def without_skip(*args, **kwargs):
        kwargs["D"] = torch.zeros_like(kwargs["D"])
        return real_scan(*args, **kwargs)

    broken = SimpleNamespace(chunk_scan=None, split_conv1d_scan=without_skip)
    monkeypatch.setattr(mamba2, "mamba_ssm_kernels", lambda: broken)
    disagreeing = compare_paths(model, audio, None)
    assert disagreeing["sdr_db"] < 30, disagreeing


def test_training_keeps_only_the_projection_for_the_backward() -> None:
    """With gradients on, conv, scan and norm run again in the backward (as mamba-ssm's fused
    kernel does) instead of keeping their intermediates: same gradients, a fraction of the memory."""
    torch.manual_seed(4)
    layer = Mamba2(64, expand=4, d_state=16)
    u = torch.randn(1, 450, 64)
    projections = [t.detach().requires_grad_()
                   for t in mamba2.in_projections(layer, u[0], layer.in_proj.weight, (3, 150))]
    weights = torch.randn(3, 150, 64)

    def run(mix) -> tuple[int, list[torch.Tensor]]:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = mix(layer, *projections)
        params = [*projections, *layer.parameters()]
        grads = torch.autograd.grad((out * weights).sum(), params, allow_unused=True)
        return sum(storages.values()), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    kept_bytes, grads = run(mamba2.mix_and_project)
    # The same computation, everything kept
    all_bytes, expected = run(lambda m, *inputs: mamba2._mix_and_project(m, *inputs, m.out_proj.weight))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # What is kept: the projections' storages, nothing of conv, scan or norm.
    zxbcdt_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in projections}.values())
    assert all_bytes > 4 * zxbcdt_bytes, (all_bytes, zxbcdt_bytes)


@pytest.mark.parametrize("function", ["CausalConv", "CompiledCausalConv"])
def test_the_training_convs_backward_is_the_convs_gradient(function: str):
    """The conv of a training step (CausalConv eagerly, CompiledCausalConv inside torch.compile) against
    the plain conv's own autograd, in float64, and against finite differences; a frozen kernel and
    bias (LoRA) get no gradient."""
    torch.manual_seed(0)
    conv = getattr(mamba2, function)
    xBC = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def training_form(xBC, weight, bias):
        images = xBC.transpose(1, 2).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return conv.apply(images, weight[:, None, None], bias)

    eager = F.silu(F.conv1d(xBC.transpose(1, 2), weight[:, None], bias, padding=3, groups=5)[..., :11]).transpose(1, 2)
    got = F.silu(training_form(xBC, weight, bias))
    torch.testing.assert_close(got, eager)
    upstream = torch.randn_like(eager)
    for a, b in zip(torch.autograd.grad(got, (xBC, weight, bias), upstream),
                    torch.autograd.grad(eager, (xBC, weight, bias), upstream)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(training_form, (xBC, weight, bias))
    frozen_weight, frozen_bias = weight.detach(), bias.detach()
    F.silu(training_form(xBC, frozen_weight, frozen_bias)).sum().backward()
    assert xBC.grad is not None and frozen_weight.grad is None and frozen_bias.grad is None


def test_an_eager_training_step_uses_the_training_conv(monkeypatch: pytest.MonkeyPatch):
    """causal_conv_silu with gradients goes through CausalConv (its cheaper backward), without them
    through the fused inference kernel; both give the same values."""
    torch.manual_seed(1)
    xBC, weight, bias = torch.randn(2, 9, 6, requires_grad=True), torch.randn(6, 4), torch.randn(6)
    calls = []
    real_apply = mamba2.CausalConv.apply
    monkeypatch.setattr(mamba2.CausalConv, "apply", lambda *args: calls.append(1) or real_apply(*args))
    trained = mamba2.causal_conv_silu(xBC, weight, bias)
    with torch.no_grad():
        inferred = mamba2.causal_conv_silu(xBC, weight, bias)
    assert calls == [1]
    torch.testing.assert_close(trained, inferred)
