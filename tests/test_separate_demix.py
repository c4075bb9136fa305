"""demix equals MSST's demix from the real `msst` PyPI package (0.1.0), on the same model and input.

`msst.utils.model_utils` imports with numpy, torch, ml_collections and tqdm only, so no stand-in is
needed here. Equality is exact (bit for bit): same chunks, same batches, same arithmetic order.
"""
import numpy as np
import pytest
import torch
from ml_collections import ConfigDict

from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.separate import demix

msst_model_utils = pytest.importorskip("msst.utils.model_utils")


def tiny_model(seed: int = 0, stems: int = 1) -> BSMamba2:
    torch.manual_seed(seed)
    return BSMamba2(
        dim=16, depth=1, num_stems=stems, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
        freqs_per_bands=(32, 32, 65), mask_estimator_depth=1,
    ).eval()


def config(num_overlap: int, batch_size: int, instruments=("vocals",), target=None, chunk=1024) -> ConfigDict:
    return ConfigDict({
        "audio": {"chunk_size": chunk, "sample_rate": 44100},
        "inference": {"num_overlap": num_overlap, "batch_size": batch_size},
        "training": {"instruments": list(instruments), "target_instrument": target, "use_amp": True},
    })


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    "length,num_overlap,batch_size,channels",
    [
        (5000, 4, 2, 2),  # padded, several batches, last batch partial
        (5000, 2, 1, 2),  # batch of one: first chunk drops its fade-in
        (3000, 4, 3, 1),  # mono in, mono out
        (700, 4, 4, 2),   # shorter than 2*border: no reflect padding
        (100, 2, 1, 2),   # shorter than half a chunk: zero padding
        (6001, 1, 2, 2),  # no overlap: border 0
        (9999, 3, 4, 2),  # step not dividing the chunk
    ],
)
def test_demix_equals_msst_demix(length, num_overlap, batch_size, channels):
    model = tiny_model()
    cfg = config(num_overlap, batch_size)
    mixture = (np.random.default_rng(length).standard_normal((channels, length)) * 0.1).astype(np.float32)
    expected = msst_model_utils.demix(cfg, model, mixture, "cpu", "bsmamba2")
    ours = demix(model, mixture, cfg, "cpu")
    assert list(ours) == list(expected) == ["vocals"]
    assert ours["vocals"].shape == (channels, length)
    assert ours["vocals"].dtype == np.float32
    np.testing.assert_array_equal(ours["vocals"], expected["vocals"])


def test_multi_stem_and_target_instrument_equal_msst():
    model = tiny_model(seed=1, stems=2)
    mixture = (np.random.default_rng(7).standard_normal((2, 4000)) * 0.1).astype(np.float32)
    cfg = config(2, 2, instruments=("vocals", "other"))
    expected = msst_model_utils.demix(cfg, model, mixture, "cpu", "bsmamba2")
    ours = demix(model, mixture, cfg, "cpu")
    assert list(ours) == list(expected) == ["vocals", "other"]
    for name in ours:
        np.testing.assert_array_equal(ours[name], expected[name])
    # target_instrument with a model that returns every stem keeps just the target, like MSST
    cfg = config(2, 2, instruments=("vocals", "other"), target="other")
    expected = msst_model_utils.demix(cfg, model, mixture, "cpu", "bsmamba2")
    ours = demix(model, mixture, cfg, "cpu")
    assert list(ours) == list(expected) == ["other"]
    np.testing.assert_array_equal(ours["other"], expected["other"])


def test_silence_in_gives_silence_out():
    model = tiny_model()
    out = demix(model, np.zeros((2, 5000), dtype=np.float32), config(4, 2), "cpu")
    assert np.isfinite(out["vocals"]).all()
    assert np.abs(out["vocals"]).max() == 0.0


def test_bad_inputs_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="3 channels"):
        demix(model, np.zeros((3, 2000), dtype=np.float32), config(2, 1), "cpu")
    with pytest.raises(ValueError, match="NaN"):
        demix(model, np.full((2, 2000), np.nan, dtype=np.float32), config(2, 1), "cpu")
    with pytest.raises(ValueError, match="inference.num_overlap"):
        demix(model, np.zeros((2, 2000), dtype=np.float32), config(0, 1), "cpu")
    with pytest.raises(ValueError, match="target_instrument"):
        demix(model, np.zeros((2, 2000), dtype=np.float32), config(2, 1, target="drums"), "cpu")
