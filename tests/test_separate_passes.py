"""MSST's extra passes (TTA, bigshifts), the spectrogram pictures and the normalisation, in the one engine."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from ml_collections import ConfigDict

from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.separate import Separator, demix
from bsmamba2_plugin.separate.passes import circular_ranges, msst_passes

RATE = 8000


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def tiny_model(stems: int = 1) -> BSMamba2:
    torch.manual_seed(0)
    return BSMamba2(dim=16, depth=1, num_stems=stems, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
                    freqs_per_bands=(32, 32, 65), mask_estimator_depth=1).eval()


def config(normalize: bool = False, instruments=("vocals",)) -> ConfigDict:
    return ConfigDict({"audio": {"chunk_size": 1024, "sample_rate": RATE},
                       "inference": {"precision": "fp32", "num_overlap": 4, "batch_size": 2, "normalize": normalize},
                       "training": {"instruments": list(instruments), "target_instrument": None, "use_amp": True}})


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    left = rng.standard_normal(frames) * 0.1
    return np.stack([left, 0.5 * left + rng.standard_normal(frames) * 0.05][:channels]).astype(np.float32)


def test_tta_is_the_average_of_the_three_passes_by_hand():
    model, cfg = tiny_model(), config()
    mixture = noise(2, 5000)
    plain = demix(model, mixture, cfg)["vocals"]
    swapped = demix(model, mixture[::-1].copy(), cfg)["vocals"][::-1]
    inverted = -demix(model, -mixture, cfg)["vocals"]
    expected = (plain + swapped + inverted) / 3
    ours = Separator(cfg, model=model, device="cpu").separate(mixture, RATE, use_tta=True)["vocals"]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(ours - plain).max() > 1e-4  # the extra passes change the result (the model is not symmetric)


@pytest.mark.parametrize("length,shifts", [(5000, 4), (4097, 3), (3, 4)])
def test_bigshifts_equals_a_plain_circular_shift_reference(length, shifts):
    model, cfg = tiny_model(stems=2), config(instruments=("vocals", "other"))
    mixture = noise(2, length, seed=length)
    step = length // shifts
    reference = {"vocals": [], "other": []}
    for k in range(shifts):
        out = demix(model, np.roll(mixture, k * step, axis=1), cfg)
        for name in reference:
            reference[name].append(np.roll(out[name], -k * step, axis=1))
    ours = Separator(cfg, model=model, device="cpu", bigshifts=shifts).separate(mixture, RATE)
    for name in reference:
        np.testing.assert_allclose(ours[name], np.mean(reference[name], axis=0), rtol=1e-5, atol=1e-7)


def test_tta_with_bigshifts_in_a_file_equals_the_in_memory_result(tmp_path):
    model, cfg = tiny_model(), config()
    mixture = noise(2, 6000, seed=3)
    sf.write(tmp_path / "song.wav", mixture.T, RATE, subtype="FLOAT")
    separator = Separator(cfg, model=model, device="cpu")
    calls = []
    written = separator.separate_file(tmp_path / "song.wav", tmp_path / "out", use_tta=True, bigshifts=2,
                                      progress=lambda done, total: calls.append((done, total)))
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    in_memory = separator.separate(mixture, RATE, use_tta=True, bigshifts=2)["vocals"]
    np.testing.assert_allclose(stem.T, in_memory, rtol=1e-6, atol=1e-7)
    assert {total for _, total in calls} == {6 * 6000}  # the bar counts every one of the 6 passes
    assert calls[-1][0] == 6 * 6000 and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_passes_in_msst_order_and_circular_ranges():
    assert [(p.shift, p.swap, p.negate) for p in msst_passes(10, 2, True)] == [
        (0, False, False), (5, False, False), (0, True, False), (5, True, False), (0, False, True), (5, False, True)]
    assert circular_ranges(0, 10, 3, 10) == [(0, 7, 10), (3, 0, 7)]
    assert circular_ranges(8, 12, 0, 10) == [(0, 8, 10), (2, 0, 2)]


def test_draw_spectro_writes_a_picture_beside_each_stem(tmp_path):
    model, cfg = tiny_model(), config()
    sf.write(tmp_path / "song.wav", noise(2, 2 * RATE).T, RATE, subtype="FLOAT")
    written = Separator(cfg, model=model, device="cpu").separate_file(
        tmp_path / "song.wav", tmp_path / "out", draw_spectro=1.5, extract_instrumental=True)
    for path in written.values():
        picture = path.with_suffix(".jpg")
        assert picture.is_file() and picture.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, as MSST writes
    with pytest.raises(ValueError, match="draw_spectro"):
        Separator(cfg, model=model, device="cpu").separate_file(tmp_path / "song.wav", tmp_path / "o", draw_spectro=-1)


def test_digital_silence_with_normalize_stays_silence():
    model = tiny_model()
    out = Separator(config(normalize=True), model=model, device="cpu").separate(
        np.zeros((2, 4000), np.float32), RATE, use_tta=True, bigshifts=2)
    assert np.abs(out["vocals"]).max() == 0.0


def test_normalize_is_undone_and_equals_msst_formula():
    model, cfg = tiny_model(), config(normalize=True)
    mixture = noise(2, 5000, seed=5) + 0.3
    mono = mixture.astype(np.float64).mean(axis=0)
    mean, std = mono.mean(), mono.std()
    expected = demix(model, ((mixture - mean) / std).astype(np.float32), cfg)["vocals"] * std + mean
    ours = Separator(cfg, model=model, device="cpu").separate(mixture, RATE)["vocals"]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_bad_options_are_clear_errors():
    model, cfg = tiny_model(), config()
    with pytest.raises(ValueError, match="bigshifts must be a positive integer"):
        Separator(cfg, model=model, device="cpu", bigshifts=0)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        Separator(cfg, model=model, device="cpu", precision="fp8")
    with pytest.raises(TypeError, match="unknown separation option"):
        Separator(cfg, model=model, device="cpu").separate(noise(2, 100), RATE, shifts=2)
    with pytest.raises(ValueError, match="cannot use TTA or bigshifts"):
        Separator(cfg, model=model, device="cpu", use_tta=True).stream(2)


def test_precision_setting_reaches_the_model_call():
    """inference.precision / precision=: auto follows what the CPU reports; bf16 runs the model in bf16."""
    import warnings

    from bsmamba2_plugin.precision import cpu_native_bf16

    model = tiny_model()
    cfg = config()
    cfg.inference.precision = "auto"
    native, _ = cpu_native_bf16()
    auto = Separator(cfg, model=model, device="cpu")
    assert auto.precision.name == ("bf16" if native else "fp32")
    seen = []
    hook = model.register_forward_hook(lambda module, args, out: seen.append(torch.get_autocast_dtype("cpu")
                                                                             if torch.is_autocast_enabled("cpu")
                                                                             else None))
    mixture = noise(2, 5000, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 where it is not native warns that it is slow
        low = Separator(cfg, model=model, device="cpu", precision="bf16").separate(mixture, RATE)["vocals"]
    full = Separator(cfg, model=model, device="cpu", precision="fp32").separate(mixture, RATE)["vocals"]
    hook.remove()
    assert torch.bfloat16 in seen and None in seen
    sdr = 10 * np.log10(np.sum(full ** 2) / np.sum((full - low) ** 2))
    assert 20 < sdr < 200, sdr  # close to fp32, but really computed in bf16
