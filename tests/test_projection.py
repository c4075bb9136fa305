"""model/projection.py: the projections' product, which CPU library runs it, and the setting's errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bsmamba2_plugin import cpu_info
from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.model import projection as P

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n"

needs_onednn = pytest.mark.skipif(P._onednn_linear() is None, reason="this torch has no oneDNN linear")


def cpuinfo(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, vendor", [(AMD, "AuthenticAMD"), (INTEL, "GenuineIntel"), (ARM, "")])
def test_cpu_vendor_is_what_cpuinfo_says(tmp_path: Path, text: str, vendor: str) -> None:
    assert cpu_info.cpu_vendor(cpuinfo(tmp_path, text)) == vendor


def test_cpu_vendor_without_cpuinfo_asks_the_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_info.platform, "processor", lambda: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD")
    assert cpu_info.cpu_vendor(str(tmp_path / "missing")) == "AuthenticAMD"
    monkeypatch.setattr(cpu_info.platform, "processor", lambda: "arm")
    assert cpu_info.cpu_vendor(str(tmp_path / "missing")) == ""


@needs_onednn
def test_auto_is_onednn_on_amd_and_torch_s_own_elsewhere(tmp_path: Path) -> None:
    assert P._auto_cpu_gemm.__wrapped__(cpuinfo(tmp_path, AMD), "linux") == (
        "onednn", "oneDNN (an AMD CPU, where MKL's float32 GEMM is the slower)")
    assert P._auto_cpu_gemm.__wrapped__(cpuinfo(tmp_path, INTEL), "linux") == (
        "mkl", "torch's own (MKL on x86) (the CPU is GenuineIntel)")
    assert P._auto_cpu_gemm.__wrapped__(cpuinfo(tmp_path, ARM), "linux") == (
        "mkl", "torch's own (MKL on x86) (CPU vendor unknown)")


@needs_onednn
def test_off_linux_auto_asks_the_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_info.platform, "processor", lambda: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD")
    # the cpuinfo file is not read off Linux, even if one is passed
    assert P._auto_cpu_gemm.__wrapped__(cpuinfo(tmp_path, INTEL), "win32")[0] == "onednn"
    monkeypatch.setattr(cpu_info.platform, "processor", lambda: "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel")
    assert P._auto_cpu_gemm.__wrapped__(cpuinfo(tmp_path, AMD), "win32")[0] == "mkl"


def test_the_setting_is_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P.ENV_VAR, "blas")
    with pytest.raises(ValueError, match="BSMAMBA2_CPU_GEMM='blas' is not a CPU GEMM choice; expected one of "
                                         "auto, mkl, onednn"):
        P.project(torch.randn(2, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="'blas' is not a CPU GEMM choice"):
        with P.using_cpu_gemm("blas"):
            pass
    monkeypatch.setenv(P.ENV_VAR, "mkl")
    assert P.cpu_gemm() == ("mkl", "torch's own (MKL on x86) (BSMAMBA2_CPU_GEMM=mkl)")
    with P.using_cpu_gemm("onednn"):
        assert P.requested_cpu_gemm() == "onednn"
    assert P.requested_cpu_gemm() == "mkl"  # put back


def test_forcing_onednn_where_torch_lacks_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_onednn_linear", lambda: None)
    monkeypatch.setenv(P.ENV_VAR, "onednn")
    with pytest.raises(RuntimeError, match="BSMAMBA2_CPU_GEMM=onednn, but this build of torch has no oneDNN linear"):
        P.cpu_gemm()


@needs_onednn
@pytest.mark.parametrize("gemm", ["mkl", "onednn"])
def test_project_is_the_linear_map(gemm: str) -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 32), torch.randn(48)
    x = torch.randn(3, 40, 32)
    wide = torch.randn(40, 64)
    cases = [(x, None), (x, bias), (x[0], bias),  # and strided inputs: rows apart, every other one, transposed
             (wide[:, :32], bias), (wide[:, ::2], None), (x[:, ::2], bias), (x.transpose(0, 1), None),
             (torch.randn(32, 40).t(), bias)]
    with P.using_cpu_gemm(gemm), torch.inference_mode():
        for inputs, b in cases:
            torch.testing.assert_close(P.project(inputs, weight, b), F.linear(inputs, weight, b), rtol=1e-5, atol=1e-5)


@pytest.fixture
def onednn_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the products that go through oneDNN's linear (the real one, which still runs)."""
    calls: list[int] = []
    onednn = P._onednn_linear()
    monkeypatch.setattr(P, "_onednn_linear", lambda: lambda *args: calls.append(1) or onednn(*args))
    return calls


@needs_onednn
def test_onednn_only_where_nothing_else_is_asked_of_the_product(onednn_calls: list[int]) -> None:
    """Autograd and autocast see torch's own product: oneDNN's linear has no backward, and under
    autocast the product must come out in bf16."""
    calls = onednn_calls
    weight = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(5, 4)
    with P.using_cpu_gemm("onednn"):
        P.project(x, weight).sum().backward()
        assert not calls and weight.grad is not None
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            assert P.project(x, weight).dtype == torch.bfloat16
        assert not calls
        with torch.no_grad():
            P.project(x, weight)
        assert calls == [1]


@needs_onednn
def test_the_model_gives_the_same_output_through_either_library(onednn_calls: list[int]) -> None:
    torch.manual_seed(0)
    model = BSMamba2(depth=1).eval()
    audio = torch.randn(1, 2, 22050)
    outputs, through_onednn = {}, {}
    for gemm in ("mkl", "onednn"):
        before = len(onednn_calls)
        with P.using_cpu_gemm(gemm), torch.inference_mode():
            outputs[gemm] = model(audio)
        through_onednn[gemm] = len(onednn_calls) - before
    # per direction of the 2 bidirectional layers (time, bands): in_proj's 3 parts and out_proj; and each merge
    assert through_onednn == {"mkl": 0, "onednn": 2 * (2 * 4 + 1)}
    torch.testing.assert_close(outputs["onednn"], outputs["mkl"], rtol=1e-4, atol=1e-5)
