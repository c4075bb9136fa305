"""precision.py: native bf16 from what the CPU reports, the choice it makes, and its errors."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from bsmamba2_plugin import precision as P
from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.settings import InferenceSettings

INTEL_AMX = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
OLD = "processor\t: 0\nmodel name\t: Intel Xeon E5\nflags\t\t: fpu sse avx2 avx512f\n"


def cpuinfo(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.fixture
def cpu_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make the module read a cpuinfo of our choosing (a real file, parsed as on Linux)."""
    def use(text: str) -> None:
        path = cpuinfo(tmp_path, text)
        monkeypatch.setattr(P, "CPUINFO", path)
        monkeypatch.setattr(P.sys, "platform", "linux")
        P.cpu_native_bf16.cache_clear()
    yield use
    P.cpu_native_bf16.cache_clear()


@pytest.mark.parametrize("text, native, flag", [(INTEL_AMX, True, "amx_bf16"), (ZEN4, True, "avx512_bf16"),
                                                (OLD, False, None)])
def test_native_bf16_comes_from_the_cpu_flags(tmp_path: Path, text: str, native: bool, flag: str | None) -> None:
    found, why = P.cpu_native_bf16.__wrapped__(cpuinfo(tmp_path, text), "linux")
    assert found is native
    if flag:
        assert why == f"CPU reports {flag}"
    else:
        assert "neither amx_bf16 nor avx512_bf16" in why


def test_elsewhere_torch_s_own_report_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On macOS / Windows the cpuinfo file is not read, even if one is passed.
    monkeypatch.setattr(P, "_torch_reports_native_bf16", lambda: None)
    assert P.cpu_native_bf16.__wrapped__(cpuinfo(tmp_path, ZEN4), "darwin") == (
        False, "no report of native bf16 for this CPU")
    monkeypatch.setattr(P, "_torch_reports_native_bf16", lambda: "avx512_bf16")
    assert P.cpu_native_bf16.__wrapped__(cpuinfo(tmp_path, OLD), "win32") == (
        True, "torch reports avx512_bf16 for this CPU")


def test_linux_without_cpuinfo_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_torch_reports_native_bf16", lambda: None)
    assert P.cpu_native_bf16.__wrapped__(str(tmp_path / "missing"), "linux")[0] is False


def test_auto_is_bf16_on_a_native_cpu(cpu_reports) -> None:
    cpu_reports(ZEN4)
    chosen = P.resolve_precision("auto", torch.device("cpu"), use_amp=True)
    assert (chosen.name, chosen.dtype, chosen.reason) == ("bf16", torch.bfloat16, "bf16 (CPU reports avx512_bf16)")


def test_auto_is_fp32_where_bf16_is_not_native_or_amp_is_off(cpu_reports) -> None:
    cpu_reports(OLD)
    chosen = P.resolve_precision("auto", "cpu", use_amp=True)
    assert (chosen.name, chosen.dtype) == ("fp32", None)
    assert "neither amx_bf16 nor avx512_bf16" in chosen.reason
    cpu_reports(INTEL_AMX)
    off = P.resolve_precision("auto", "cpu", use_amp=False)
    assert (off.name, off.dtype, off.reason) == ("fp32", None, "fp32 (training.use_amp is false)")


def test_explicit_choices(cpu_reports) -> None:
    cpu_reports(INTEL_AMX)
    assert P.resolve_precision("fp32", "cpu").dtype is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert P.resolve_precision("bf16", "cpu", use_amp=False).dtype is torch.bfloat16
    cpu_reports(OLD)
    with pytest.warns(UserWarning, match=r"--precision=bf16 on cpu: .*likely slower than fp32"):
        chosen = P.resolve_precision("bf16", "cpu", origin="--precision")
    assert chosen.dtype is torch.bfloat16


@pytest.mark.parametrize("bad", ["float32", "BF16", "", "fp16"])
def test_a_bad_value_is_named_with_the_choices(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"inference.precision={bad!r} is not a precision; expected one of "
                                         r"auto, fp32, bf16"):
        P.resolve_precision(bad, "cpu", origin="inference.precision")


def test_training_precision(cpu_reports) -> None:
    cpu_reports(ZEN4)
    assert P.training_precision(True, "bfloat16", "cpu").dtype is torch.bfloat16
    assert "not used on CPU" in P.training_precision(True, "float16", "cpu").reason
    assert P.training_precision(False, "bfloat16", "cpu").dtype is None
    cpu_reports(OLD)
    fp32 = P.training_precision(True, "bfloat16", "cpu")
    assert fp32.dtype is None and "training.use_amp is not used" in fp32.reason
    with pytest.raises(ValueError, match=r"training.amp_dtype='half': choose bfloat16 or float16"):
        P.training_precision(True, "half", "cpu")


def test_autocast_runs_products_in_bf16_and_fp32_untouched() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with P.autocast(P.Precision("bf16", torch.bfloat16, "test"), "cpu"):
        assert (a @ b).dtype is torch.bfloat16
    with P.autocast(P.Precision("fp32", None, "test"), torch.device("cpu")):
        assert (a @ b).dtype is torch.float32
        assert not torch.is_autocast_enabled("cpu")


def test_this_machine_is_read_without_error() -> None:
    native, why = P.device_native_bf16(torch.device("cpu"))
    assert isinstance(native, bool) and why


@pytest.mark.parametrize("value", ["false", 0, None])
def test_use_amp_must_be_true_or_false(value) -> None:
    # bool("false") is True: a quoted value would have turned mixed precision on without a word.
    config = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "bsmamba2_vocals_small.yaml"))
    with config.training.ignore_type():  # a YAML file can hold any type there
        config.training.use_amp = value
    with pytest.raises(ValueError, match=re.escape(f"training.use_amp={value!r}: expected true or false")):
        InferenceSettings.from_config(config)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (None, False), ("yes", None)])
def test_inference_normalize_must_be_true_or_false(value, expected) -> None:
    # "yes" was read as false in silence (only `is True` counted); MSST's truthiness would normalise
    config = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "bsmamba2_vocals_small.yaml"))
    with config.inference.ignore_type():
        config.inference.normalize = value
    if expected is None:
        with pytest.raises(ValueError, match=re.escape(f"inference.normalize={value!r}: expected true or false")):
            InferenceSettings.from_config(config)
    else:
        assert InferenceSettings.from_config(config).normalize is expected
