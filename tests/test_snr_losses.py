"""bsmamba2_plugin.snr_losses: torch-l1-snr's and torch-log-wmse's quantities in plain torch.

Each is checked against the formula written out here in numpy (and scipy's full convolution for the
hearing filter), against known values, and where the real library can run here (its time-domain
classes and LogWMSE at 44.1 kHz never call torchaudio, so the test-only stand-in serves) against
the library itself. With LOSS_REFERENCE_PYTHON set to a python that has torchaudio, torch-l1-snr
and torch-log-wmse, every quantity is compared with the library there."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bsmamba2_plugin import metrics, snr_losses
from bsmamba2_plugin.train.errors import TrainingConfigError
from bsmamba2_plugin.train.loss import MSSTLoss
from train_fixtures import make_tracks, run_train, tiny_config

HERE = Path(__file__).parent
STAND_IN = HERE / "torchaudio_stand_in"


def pair(shape=(3, 2, 2, 6000), noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(shape).astype(np.float32) * np.linspace(0.05, 1.0, shape[0], dtype=np.float32).reshape(
        -1, *[1] * (len(shape) - 1))
    return y + noise * rng.standard_normal(shape).astype(np.float32) * 0.2, y


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# ------------------------------------------------------------------ numpy reference formulas
def np_d1(err, ref, eps=1e-3):
    b = err.shape[0]
    return 10 * np.log10((np.abs(err.reshape(b, -1)).mean(1) + eps) / (np.abs(ref.reshape(b, -1)).mean(1) + eps))


def np_dbrms(x, eps=1e-8):
    return 20 * np.log10(np.sqrt((x.reshape(x.shape[0], -1).astype(np.float64) ** 2).mean(1) + eps))


def np_level(est, ref):
    lt, lp = np_dbrms(ref), np_dbrms(est)
    r = np.abs(lp - lt)
    eta = (lt > np.maximum(lp, -60.0)).astype(float)
    lam = 0.1 + eta * 0.9 * np.clip(r / np.maximum(lt + 60.0, 1e-6), 0, 1)
    return (lam * r).mean()


def np_stft(x, n_fft, hop):
    """Centered, reflect-padded frames, Hann window of unit L2 norm, one-sided DFT."""
    window = np.hanning(n_fft + 1)[:-1]  # periodic
    window = window / np.sqrt((window ** 2).sum())
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    frames = 1 + (padded.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    return np.fft.rfft(padded[..., idx] * window, axis=-1)


def np_stft_l1_snr_db(est, ref):
    b, n = est.shape[0], est.shape[-1]
    res = [(f, h) for f, h in ((512, 128), (1024, 256), (2048, 512)) if n >= f // 2 + 1] if n >= 512 else []
    if not res:
        return np_d1(est - ref, ref).mean()
    total = 0.0
    for f, h in res:
        e, r = np_stft(est.astype(np.float64), f, h).reshape(b, -1), np_stft(ref.astype(np.float64), f, h).reshape(b, -1)
        total += (np_d1(e.real - r.real, r.real) + np_d1(e.imag - r.imag, r.imag)).mean()
    return total / len(res)


def np_resample(x, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99):
    """torchaudio's sinc_interp_hann resampling from its definition, per output sample, in float64.

    With the rates divided by their gcd (O, N) and base = rolloff min(O, N), output n = m N + j is
    sum_i x[i] (base / O) sinc(t) cos^2(pi t / (2 w)), t = base ((i - m O) / O - j / N), over |t| < w
    (w = lowpass_filter_width); j / N rounded to float32 as torchaudio computes it; ceil(N len / O)
    outputs."""
    g = math.gcd(orig_freq, new_freq)
    o, n_ = orig_freq // g, new_freq // g
    base, length = min(o, n_) * rolloff, x.shape[-1]
    out = np.arange(-(-n_ * length // o))
    phase = (out % n_).astype(np.float32) / np.float32(n_)  # float32 division, as torchaudio's
    t = base * ((np.arange(length)[None, :] - (out // n_)[:, None] * o) / o - phase.astype(np.float64)[:, None])
    taps = np.where(np.abs(t) < lowpass_filter_width,
                    np.sinc(t) * np.cos(np.pi * t / (2 * lowpass_filter_width)) ** 2, 0.0) * base / o
    return x.astype(np.float64) @ taps.T


def np_log_wmse(mix, est, ref, ir):
    """mix (B, C, T), est/ref (B, C, S, T): energies of the full linear convolution with the filter."""
    from scipy.signal import fftconvolve

    n = est.shape[-1]
    energy = lambda x: (fftconvolve(x.astype(np.float64), ir.reshape((1,) * (x.ndim - 1) + (-1,)).astype(np.float64),
                                    axes=-1) ** 2).sum(-1)
    power = np.maximum(energy(mix) / n, 1e-16)[:, :, None]
    mse = energy(est - ref) / (n * power)
    return (-4 * np.log(mse + 1e-8)).mean()


# ---------------------------------------------------------------------------- l1_snr family
def test_l1_snr_and_l1_snr_db_equal_the_written_out_formula():
    est, ref = pair()
    assert float(snr_losses.l1_snr(t(est), t(ref))) == pytest.approx(np_d1(est - ref, ref).mean(), rel=1e-5)
    quiet = 0.5 * ref  # the estimate quieter than the reference: eta = 1, the adaptive weight rises
    expected = np_d1(quiet - ref, ref).mean() + np_level(quiet, ref)
    assert float(snr_losses.l1_snr_db(t(quiet), t(ref))) == pytest.approx(expected, rel=1e-5)
    assert np_level(quiet, ref) > 0.6  # the level term really contributes here
    expected = np_d1(est - ref, ref).mean() + np_level(est, ref)
    assert float(snr_losses.l1_snr_db(t(est), t(ref))) == pytest.approx(expected, rel=1e-5)


def test_l1_snr_known_values():
    _, ref = pair(shape=(2, 1, 2, 3000))
    level = np.abs(ref.reshape(2, -1)).mean(1)
    same = float(snr_losses.l1_snr(t(ref), t(ref)))
    assert same == pytest.approx((10 * np.log10(1e-3 / (level + 1e-3))).mean(), rel=1e-6)
    # a silent estimate and a doubled one both miss by exactly mean|y|: 0 dB
    assert float(snr_losses.l1_snr(t(0 * ref), t(ref))) == pytest.approx(0.0, abs=1e-6)
    assert float(snr_losses.l1_snr(t(2 * ref), t(ref))) == pytest.approx(0.0, abs=1e-6)
    # identical signals: the level term is 0; silence against silence: 0 dB and no level gap
    assert float(snr_losses.l1_snr_db(t(ref), t(ref))) == pytest.approx(same, rel=1e-6)
    silence = torch.zeros(2, 1, 2, 3000)
    assert float(snr_losses.l1_snr_db(silence, silence)) == 0.0
    # a silent estimate of a loud reference: level term lambda0 + delta * 1 = full weight x gap
    gap = np_dbrms(ref) - (-80.0)
    assert float(snr_losses.l1_snr_db(silence, t(ref))) == pytest.approx(gap.mean(), rel=1e-5)


def test_stft_l1_snr_db_equals_numpy_stft_formula_and_falls_back_on_short_input():
    est, ref = pair(shape=(2, 2, 2, 5000))
    assert float(snr_losses.stft_l1_snr_db(t(est), t(ref))) == pytest.approx(np_stft_l1_snr_db(est, ref), rel=1e-4)
    short_est, short_ref = est[..., :800], ref[..., :800]  # 2048 dropped (needs 1025), 512 and 1024 kept
    assert float(snr_losses.stft_l1_snr_db(t(short_est), t(short_ref))) == pytest.approx(
        np_stft_l1_snr_db(short_est, short_ref), rel=1e-4)
    tiny_est, tiny_ref = est[..., :400], ref[..., :400]  # below 512 samples: the time-domain l1_snr
    assert float(snr_losses.stft_l1_snr_db(t(tiny_est), t(tiny_ref))) == pytest.approx(
        np_d1(tiny_est - tiny_ref, tiny_ref).mean(), rel=1e-5)
    # identical: both parts at 10 log10(eps / (level + eps)), far below a noisy estimate
    assert float(snr_losses.stft_l1_snr_db(t(ref), t(ref))) < -40 < float(snr_losses.stft_l1_snr_db(t(est), t(ref)))


def test_multi_l1_snr_db_is_the_even_blend_and_the_metric_is_its_negative():
    est, ref = pair(shape=(1, 1, 2, 5000))
    time = np_d1(est - ref, ref).mean() + np_level(est, ref)
    expected = 0.5 * time + 0.5 * np_stft_l1_snr_db(est, ref)
    assert float(snr_losses.multi_l1_snr_db(t(est), t(ref))) == pytest.approx(expected, rel=1e-4)
    assert metrics.l1_snr(ref[0, 0], est[0, 0]) == pytest.approx(-expected, rel=1e-4)
    assert metrics.l1_snr(ref[0, 0], ref[0, 0]) > metrics.l1_snr(ref[0, 0], est[0, 0])
    with pytest.raises(ValueError, match="spec_weight=1.5"):
        snr_losses.multi_l1_snr_db(t(est), t(ref), spec_weight=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        snr_losses.l1_snr(t(est), t(ref[..., :10]))


# ---------------------------------------------------------------------------------- log_wmse
def test_weighted_energy_is_the_full_convolution_energy():
    pytest.importorskip("scipy")
    from scipy.signal import lfilter

    ir = snr_losses.hearing_impulse_response().numpy()
    assert ir.shape == (4000,)
    rng = np.random.default_rng(1)
    for n in (1, 777, 4410, 8193):  # even and odd transform lengths alike
        x = rng.standard_normal((2, n))
        # lfilter gives the first n outputs; feeding zeros after gives the filter's ring-out
        full = lfilter(ir.astype(np.float64), [1.0], np.concatenate([x, np.zeros((2, ir.size - 1))], axis=1), axis=1)
        got = snr_losses.weighted_energy(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, (full ** 2).sum(1), rtol=1e-9)
    x32 = torch.from_numpy(rng.standard_normal((3, 44100)).astype(np.float32))
    full = lfilter(ir.astype(np.float64), [1.0], np.concatenate([x32.double().numpy(), np.zeros((3, 3999))], 1), axis=1)
    np.testing.assert_allclose(snr_losses.weighted_energy(x32).numpy(), (full ** 2).sum(1), rtol=1e-5)
    assert torch.equal(snr_losses.weighted_energy(x32, bypass_filter=True), x32.square().sum(-1))


def test_log_wmse_equals_the_written_out_formula_and_known_values():
    pytest.importorskip("scipy")
    ir = snr_losses.hearing_impulse_response().numpy()
    est, ref = pair(shape=(2, 2, 3, 6000))  # (batch, channel, stem, time)
    mix = ref.sum(2)
    got = float(snr_losses.log_wmse(t(mix), t(est), t(ref)))
    assert got == pytest.approx(np_log_wmse(mix, est, ref, ir), rel=1e-5)
    # identical: mse 0, score -4 ln(1e-8)
    assert float(snr_losses.log_wmse(t(mix), t(ref), t(ref))) == pytest.approx(-4 * math.log(1e-8), rel=1e-6)
    # scaling everything by one gain leaves the score as it is
    assert float(snr_losses.log_wmse(t(8 * mix), t(8 * est), t(8 * ref))) == pytest.approx(got, abs=1e-4)
    # a silent mixture: its power is floored at 1e-16
    silent = np.zeros_like(mix)
    small = (est - ref) * 1e-6
    expected = np_log_wmse(silent, small, np.zeros_like(ref), ir)
    assert float(snr_losses.log_wmse(t(silent), t(small), t(np.zeros_like(ref)))) == pytest.approx(expected, rel=1e-4)
    # bypass_filter: plain energies
    n = est.shape[-1]
    power = np.maximum((mix.astype(np.float64) ** 2).sum(-1) / n, 1e-16)[:, :, None]
    plain = (-4 * np.log(((est - ref).astype(np.float64) ** 2).sum(-1) / (n * power) + 1e-8)).mean()
    assert float(snr_losses.log_wmse(t(mix), t(est), t(ref), bypass_filter=True)) == pytest.approx(plain, rel=1e-5)
    for rate in (0, -44100, 44100.5, "44100", None, True, float("nan")):
        with pytest.raises(ValueError, match=f"log_wmse at sample_rate={rate!r}: .*positive integer"):
            snr_losses.log_wmse(t(mix), t(est), t(ref), sample_rate=rate)
        with pytest.raises(ValueError, match=f"log_wmse at audio.sample_rate={rate!r}: .*positive integer"):
            snr_losses.check_log_wmse_available(rate, bypass_filter=True)
    assert float(snr_losses.log_wmse(t(mix), t(est), t(ref), sample_rate=44100.0)) == got
    with pytest.raises(ValueError, match="mixture"):
        snr_losses.log_wmse(t(mix[:1]), t(est), t(ref))


RESAMPLE_PAIRS = ((44100, 48000), (44100, 32000), (48000, 44100), (44100, 22050), (22050, 44100))


@pytest.mark.parametrize("orig, new", RESAMPLE_PAIRS)
def test_resample_is_the_windowed_sinc_formula(orig, new):
    rng = np.random.default_rng(orig + new)
    for length in (1, 147, 1000, 2049):
        x = rng.standard_normal((2, 3, length))
        expected = np_resample(x, orig, new)
        assert expected.shape[-1] == math.ceil(new * length / orig)
        got64 = snr_losses.resample(torch.from_numpy(x), orig, new)
        assert got64.dtype == torch.float64 and got64.shape == (2, 3, expected.shape[-1])
        np.testing.assert_allclose(got64.numpy(), expected, rtol=0, atol=1e-10)
        got32 = snr_losses.resample(torch.from_numpy(x).float(), orig, new)
        np.testing.assert_allclose(got32.numpy(), expected, rtol=0, atol=2e-6)
    x = torch.from_numpy(rng.standard_normal(500))
    assert snr_losses.resample(x, orig, orig) is x
    for bad in (0, -orig, orig + 0.5, True):
        with pytest.raises(ValueError, match="positive integers"):
            snr_losses.resample(x, bad, new)


LOG_WMSE_RATES = (48000, 32000, 22050, 16000, 88200)


def test_the_hearing_filter_at_other_rates_is_the_resampled_44k_filter():
    ir = snr_losses.hearing_impulse_response()
    assert snr_losses.hearing_impulse_response(44100) is ir and ir.shape == (4000,)
    for rate in LOG_WMSE_RATES:
        resampled = snr_losses.hearing_impulse_response(rate)
        assert resampled.dtype == torch.float32 and resampled.shape == (math.ceil(4000 * rate / 44100),)
        np.testing.assert_allclose(resampled.numpy(), np_resample(ir.numpy(), 44100, rate), rtol=0, atol=2e-6)
    # 2x and 1/2 are exact in length: 8000 and 2000 taps
    assert snr_losses.hearing_impulse_response(88200).shape == (8000,)
    assert snr_losses.hearing_impulse_response(22050).shape == (2000,)


def test_the_resampled_hearing_filter_keeps_its_response_in_hertz():
    """Up to the gain new / orig (resampling keeps a signal's level, so a filter's tap sum scales;
    log_wmse divides it out), |H(f)| in dB is the 44.1 kHz filter's well below the new Nyquist; the
    44.1 kHz taps used as they are at another rate would be off by dB (44.1 kHz's 100 Hz read at 48 kHz: 1 dB)."""
    def response_db(h, rate, hz):
        return 20 * np.log10(np.abs(np.exp(-2j * np.pi * np.outer(hz, np.arange(h.size)) / rate) @ h))

    ir = snr_losses.hearing_impulse_response().double().numpy()
    for rate in LOG_WMSE_RATES:
        hz = np.array([50, 100, 300, 1000, 2000, 3000, 4000, 7000, 10000, 13000])
        hz = hz[hz <= 0.3 * min(rate, 44100)]
        moved = response_db(snr_losses.hearing_impulse_response(rate).double().numpy(), rate, hz) - response_db(
            ir, 44100, hz)
        np.testing.assert_allclose(moved, 20 * np.log10(rate / 44100), atol=0.1)
        assert np.abs(response_db(ir, rate, hz) - response_db(ir, 44100, hz)).max() > 1.0


@pytest.mark.parametrize("rate", LOG_WMSE_RATES)
def test_log_wmse_at_other_rates_equals_the_formula_with_the_resampled_filter(rate):
    pytest.importorskip("scipy")
    est, ref = pair(shape=(2, 2, 2, 5000))
    mix = ref.sum(2)
    ir = np_resample(snr_losses.hearing_impulse_response().numpy(), 44100, rate)
    got = float(snr_losses.log_wmse(t(mix), t(est), t(ref), sample_rate=rate))
    assert got == pytest.approx(np_log_wmse(mix, est, ref, ir), rel=1e-5)


def test_log_wmse_metric_and_loss_share_the_formula(tmp_path):
    est, ref = pair(shape=(1, 2, 1, 6000))
    mix = ref[:, :, 0] + 0.5
    metric = metrics.log_wmse(ref[0, :, 0], est[0, :, 0], mix[0])
    assert metric == pytest.approx(float(snr_losses.log_wmse(t(mix), t(est), t(ref))), rel=1e-6)
    config = tiny_config_loaded(tmp_path)
    loss = MSSTLoss(["log_wmse_loss"], {}, config)
    # MSSTLoss takes (batch, stems, channels, time)
    assert float(loss(t(est).transpose(1, 2), t(ref).transpose(1, 2), t(mix))) == pytest.approx(-metric, rel=1e-6)


def tiny_config_loaded(tmp_path):
    from bsmamba2_plugin.config import load_config

    return load_config(tiny_config(tmp_path / "c.yaml"))


def test_log_wmse_loss_and_metric_at_another_rate_use_the_resampled_filter(tmp_path):
    est, ref = pair(shape=(1, 2, 1, 6000))
    mix = ref[:, :, 0] + 0.5
    expected = float(snr_losses.log_wmse(t(mix), t(est), t(ref), sample_rate=48000))
    assert metrics.log_wmse(ref[0, :, 0], est[0, :, 0], mix[0], 48000) == pytest.approx(expected, rel=1e-6)
    config = tiny_config_loaded(tmp_path)
    config.audio.sample_rate = 48000
    loss = MSSTLoss(["log_wmse_loss"], {}, config)
    assert float(loss(t(est).transpose(1, 2), t(ref).transpose(1, 2), t(mix))) == pytest.approx(-expected, rel=1e-6)


def test_log_wmse_loss_at_a_rate_that_is_not_a_positive_integer_is_a_start_up_error(tmp_path, monkeypatch):
    from bsmamba2_plugin.train import loss as loss_module

    config = tiny_config_loaded(tmp_path)
    # audio.sample_rate is checked when read (settings.sample_rate); the loss's own start-up check
    # names the setting too, for a rate that reaches it some other way
    monkeypatch.setattr(loss_module, "sample_rate", lambda config: 0)
    with pytest.raises(TrainingConfigError, match="log_wmse_loss.*audio.sample_rate=0: .*positive integer"):
        MSSTLoss(["log_wmse_loss"], {}, config)


# ----------------------------------------------------------- against the real libraries
LIBRARY_SCRIPT = r"""
import json, sys, numpy as np, torch
import torch_l1_snr, torch_log_wmse
data = np.load(sys.argv[1]); full = sys.argv[2] == "full"
ref, mix, probe = (torch.from_numpy(data[k]) for k in ("ref", "mix", "probe"))
losses = {"l1_snr": torch_l1_snr.L1SNRLoss(name="a"), "l1_snr_db": torch_l1_snr.L1SNRDBLoss(name="b")}
for rate in map(int, sys.argv[3].split(",")):  # other rates resample the filter with torchaudio's Resample
    losses[f"log_wmse@{rate}"] = (lambda metric: lambda e, r: metric(mix, e.transpose(1, 2), r.transpose(1, 2)))(
        torch_log_wmse.LogWMSE(sample_rate=rate))
if full:
    losses["stft_l1_snr_db"] = torch_l1_snr.STFTL1SNRDBLoss(name="c")
    losses["multi_l1_snr_db"] = torch_l1_snr.MultiL1SNRDBLoss(name="d")
out = {}
for name, loss in losses.items():
    est = torch.from_numpy(data["est"]).requires_grad_()
    value = loss(est, ref)
    value.backward()
    out[name] = [float(value), float((est.grad * probe).sum())]  # the gradient, seen along a fixed direction
print(json.dumps(out))
"""

OURS = {"l1_snr": snr_losses.l1_snr, "l1_snr_db": snr_losses.l1_snr_db, "stft_l1_snr_db": snr_losses.stft_l1_snr_db,
        "multi_l1_snr_db": snr_losses.multi_l1_snr_db}


def library_values(python: str, env: dict, tmp_path: Path, full: bool, samples: int = 44100,
                   rates: tuple[int, ...] = (44100,)):
    est, ref = pair(shape=(2, 2, 2, samples))  # (batch, stems, channels, time)
    mix, probe = ref.sum(1), pair(shape=est.shape, seed=7)[0]
    np.savez(tmp_path / "a.npz", est=est, ref=ref, mix=mix, probe=probe)
    done = subprocess.run([python, "-c", LIBRARY_SCRIPT, str(tmp_path / "a.npz"), "full" if full else "time",
                           ",".join(map(str, rates))], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {}
    for name in theirs:
        e = t(est).requires_grad_()
        if name.startswith("log_wmse@"):
            value = snr_losses.log_wmse(t(mix), e.transpose(1, 2), t(ref).transpose(1, 2),
                                        sample_rate=int(name.split("@")[1]))
        else:
            value = OURS[name](e, t(ref))
        value.backward()
        ours[name] = [float(value.detach()), float((e.grad * t(probe)).sum())]
    return theirs, ours


def assert_same(theirs: dict, ours: dict) -> None:
    for name, (value, gradient) in theirs.items():
        assert ours[name][0] == pytest.approx(value, rel=1e-5, abs=1e-5), name
        assert ours[name][1] == pytest.approx(gradient, rel=1e-5, abs=1e-6), name


def test_time_domain_l1_snr_and_log_wmse_equal_the_libraries(tmp_path):
    for module in ("torch_l1_snr", "torch_log_wmse"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(STAND_IN)])}
    theirs, ours = library_values(sys.executable, env, tmp_path, full=False)
    assert set(theirs) == {"l1_snr", "l1_snr_db", "log_wmse@44100"}
    assert_same(theirs, ours)


@pytest.mark.skipif(not os.environ.get("LOSS_REFERENCE_PYTHON"),
                    reason="LOSS_REFERENCE_PYTHON (a python with torchaudio, torch-l1-snr, torch-log-wmse) is not set")
def test_every_quantity_equals_the_libraries_with_real_torchaudio(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    rates = (44100, *LOG_WMSE_RATES)  # log_wmse's filter resampled by torchaudio's Resample at the others
    for samples in (44100, 800, 400):  # all resolutions; 2048 dropped; the time-domain fallback
        theirs, ours = library_values(os.environ["LOSS_REFERENCE_PYTHON"], env, tmp_path, full=True, samples=samples,
                                      rates=rates)
        assert len(theirs) == 4 + len(rates)
        assert_same(theirs, ours)


# ------------------------------------------------------------------------------ the trainer
@pytest.mark.parametrize("loss", ["log_wmse_loss", "l1_snr_loss", "l1_snr_db_loss", "stft_l1_snr_db_loss",
                                  "multi_l1_snr_db_loss"])
def test_each_loss_trains_a_step(tmp_path, loss):
    data = make_tracks(tmp_path / "train", count=2)
    config = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                        str(tmp_path / "r"), "--no_tensorboard", "--loss", loss])
    assert result.returncode == 0, result.stderr
    assert f"Loss: 1 x {loss} (MSST's --loss)" in result.stdout
    line, = [x for x in result.stdout.splitlines() if x.startswith("Training loss: ")]
    assert math.isfinite(float(line.split(": ")[1])), line
    assert "0 non-finite batches skipped" in result.stdout


def test_l1_snr_and_log_wmse_metrics_are_computed_in_validation(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    valid = make_tracks(tmp_path / "valid", count=1, seconds=2.5, with_mixture=True)
    config = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
                        "--results_path", str(tmp_path / "r"), "--no_tensorboard", "--metrics", "l1_snr", "log_wmse"])
    assert result.returncode == 0, result.stderr
    for name in ("l1_snr", "log_wmse"):
        line, = [x for x in result.stdout.splitlines() if x.startswith(f"Instr vocals {name}: ")]
        assert math.isfinite(float(line.split(": ")[1].split()[0])), line
