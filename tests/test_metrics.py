"""uSDR, cSDR and silent-region leakage, checked against MSST's formula and the real museval."""
import math

import numpy as np
import pytest

from bsmamba2_plugin.metrics import csdr, csdr_frames, silent_fraction, silent_leakage, usdr

museval = pytest.importorskip("museval")

SR = 8000


def _signals(seed: int, seconds: float = 4.5, channels: int = 2):
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    reference = np.stack([np.sin(2 * np.pi * (220 + 30 * c) * t) * 0.3 for c in range(channels)])
    reference += 0.05 * rng.standard_normal(reference.shape)
    estimate = reference + 0.1 * rng.standard_normal(reference.shape)
    # a filtered (delayed) component, which BSS Eval's distortion filters would treat specially
    estimate[:, 3:] += 0.2 * reference[:, :-3]
    return reference, estimate


def _museval_sdr_frames(reference, estimate):
    sdr, _, _, _ = museval.evaluate(reference.T[None], estimate.T[None], win=SR, hop=SR, mode="v4")
    return sdr[0]


def test_usdr_matches_msst_formula():
    reference, estimate = _signals(0)
    expected = 10 * np.log10((np.sum(reference**2) + 1e-8) / (np.sum((reference - estimate) ** 2) + 1e-8))
    assert usdr(reference, estimate) == pytest.approx(expected, abs=1e-9)
    assert usdr(reference, reference) == pytest.approx(10 * np.log10((np.sum(reference**2) + 1e-8) / 1e-8))


@pytest.mark.parametrize("seed,channels", [(2, 2), (3, 1)])
def test_csdr_frames_equal_museval_v4(seed, channels):
    reference, estimate = _signals(seed, channels=channels)
    ours = csdr_frames(reference, estimate, SR)
    theirs = _museval_sdr_frames(reference, estimate)
    assert ours.shape == theirs.shape == (4,)  # the trailing half second is dropped, as museval does
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert csdr(reference, estimate, SR) == pytest.approx(float(np.nanmedian(theirs)), abs=1e-6)


def test_csdr_skips_silent_frames_like_museval():
    reference, estimate = _signals(4)
    reference[:, SR:2 * SR] = 0.0  # silent reference frame
    estimate[:, 3 * SR:4 * SR] = 0.0  # silent estimate frame
    ours = csdr_frames(reference, estimate, SR)
    theirs = _museval_sdr_frames(reference, estimate)
    assert np.isnan(ours[1]) and np.isnan(ours[3])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)  # NaN positions must agree too
    assert csdr(reference, estimate, SR) == pytest.approx(float(np.nanmedian(theirs)), abs=1e-6)


def test_csdr_all_silent_reference_is_nan():
    reference = np.zeros((2, 3 * SR))
    estimate = np.ones((2, 3 * SR)) * 0.1
    assert math.isnan(csdr(reference, estimate, SR))


def test_silent_leakage_measures_estimate_level_in_silent_regions():
    n = 4 * SR
    reference = np.zeros((2, n))
    reference[:, :2 * SR] = 0.5  # first two seconds active, last two silent
    estimate = reference.copy()
    estimate[:, 2 * SR:] = 0.01  # leak at -40 dBFS
    assert silent_leakage(reference, estimate, SR) == pytest.approx(-40.0, abs=1e-6)
    assert silent_fraction(reference, SR) == pytest.approx(0.5)
    # the active region does not count, however wrong the estimate is there
    estimate[:, :2 * SR] = -3.0
    assert silent_leakage(reference, estimate, SR) == pytest.approx(-40.0, abs=1e-6)


def test_silent_leakage_floor_and_nan():
    reference = np.zeros((2, 2 * SR))
    reference[:, :SR] = 0.5
    assert silent_leakage(reference, reference.copy(), SR) == -120.0
    active = np.full((2, 2 * SR), 0.5)
    assert math.isnan(silent_leakage(active, active, SR))


def test_silent_leakage_threshold_counts_near_silence():
    rng = np.random.default_rng(5)
    reference = 1e-4 * rng.standard_normal((1, 2 * SR))  # about -80 dBFS: below the -60 default
    estimate = np.full((1, 2 * SR), 0.1)
    assert silent_leakage(reference, estimate, SR) == pytest.approx(-20.0, abs=1e-6)
    assert math.isnan(silent_leakage(reference, estimate, SR, silence_threshold_db=-90.0))


@pytest.mark.parametrize("fn", [usdr, lambda r, e: csdr(r, e, SR), lambda r, e: silent_leakage(r, e, SR)])
def test_shape_mismatch_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(np.zeros((2, 100)), np.zeros((2, 99)))
    with pytest.raises(ValueError, match="finite"):
        fn(np.full((2, 100), np.nan), np.zeros((2, 100)))
