"""Streaming separation equals MSST's demix with batch_size 1, whatever the block sizes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from ml_collections import ConfigDict

from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.separate import demix
from bsmamba2_plugin.separate import Separator


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def tiny_model() -> BSMamba2:
    torch.manual_seed(0)
    return BSMamba2(dim=16, depth=1, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
                    freqs_per_bands=(32, 32, 65), mask_estimator_depth=1).eval()


def config(num_overlap: int, batch_size: int = 1) -> ConfigDict:
    return ConfigDict({"audio": {"chunk_size": 1024, "sample_rate": 8000},
                       "inference": {"precision": "fp32", "num_overlap": num_overlap, "batch_size": batch_size},
                       "training": {"instruments": ["vocals"], "target_instrument": None, "use_amp": True}})


@pytest.mark.parametrize("length,num_overlap,channels", [
    (5000, 4, 2), (2048, 2, 2), (4096, 4, 2), (3000, 4, 1), (700, 4, 2), (100, 2, 2), (6001, 1, 2), (1025, 2, 2),
])
def test_stream_equals_demix_with_batch_one(length, num_overlap, channels):
    model = tiny_model()
    rng = np.random.default_rng(length)
    mixture = (rng.standard_normal((channels, length)) * 0.1).astype(np.float32)
    expected = demix(model, mixture, config(num_overlap))["vocals"]
    streamer = Separator(config(num_overlap), model=model, device="cpu").stream(channels)
    pieces, position = [], 0
    while position < length:
        size = int(rng.integers(1, 900))
        pieces.append(streamer.push(mixture[:, position:position + size]))
        position += size
        # fixed latency: everything older than latency_samples has come out
        emitted = sum(p.shape[-1] for p in pieces)
        assert emitted >= position - streamer.latency_samples
    pieces.append(streamer.finish())
    np.testing.assert_array_equal(np.concatenate(pieces, axis=-1)[0], expected)


def test_stream_command_from_stdin(tmp_path):
    model = tiny_model()
    cfg = config(2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        **{k: dict(v) for k, v in cfg.items()},
        "model": {"dim": 16, "depth": 1, "stft_n_fft": 256, "stft_hop_length": 64, "stft_win_length": 256,
                  "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1}}))
    torch.save(model.state_dict(), tmp_path / "m.ckpt")
    mixture = (np.random.default_rng(3).standard_normal((2, 6000)) * 0.1).astype(np.float32)
    completed = subprocess.run(
        [sys.executable, "-m", "bsmamba2_plugin.separate.stream", "--config_path", str(tmp_path / "c.yaml"),
         "--start_check_point", str(tmp_path / "m.ckpt"), "--input", "-", "--sample_rate", "8000",
         "--channels", "2", "--store_dir", str(tmp_path / "out"), "--device", "cpu", "--block_seconds", "0.03"],
        input=mixture.T.astype("<f4").tobytes(), capture_output=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert b"Real-time factor" in completed.stderr and b"Latency: 1025 samples" in completed.stderr
    stem, rate = sf.read(tmp_path / "out" / "stream_vocals.wav", dtype="float32", always_2d=True)
    assert rate == 8000
    np.testing.assert_array_equal(stem.T, demix(model, mixture, cfg)["vocals"])
    wrong = subprocess.run(
        [sys.executable, "-m", "bsmamba2_plugin.separate.stream", "--config_path", str(tmp_path / "c.yaml"),
         "--input", "-", "--sample_rate", "44100", "--channels", "2", "--store_dir", str(tmp_path / "o2"),
         "--device", "cpu"], input=b"", capture_output=True, timeout=120,
    )
    assert wrong.returncode == 2 and b"44100 Hz but the model runs at 8000 Hz" in wrong.stderr


def test_stream_command_setup_errors(tmp_path, capsys):
    from bsmamba2_plugin.separate.stream import main as stream_main

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        **{k: dict(v) for k, v in config(2).items()},
        "model": {"dim": 16, "depth": 1, "stft_n_fft": 256, "stft_hop_length": 64, "stft_win_length": 256,
                  "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1}}))
    base = ["--config_path", str(tmp_path / "c.yaml"), "--store_dir", str(tmp_path / "out"), "--device", "cpu"]
    refused = {("--input", "-", "--block_seconds", "0"): "--block_seconds must be positive seconds, got 0.0",
               ("--input", "-", "--block_seconds", "nan"): "--block_seconds must be positive seconds, got nan",
               ("--input", "-", "--sample_rate", "0"): "--sample_rate must be 1 or more, got 0",
               ("--input", "-", "--channels", "-2"): "--channels must be 1 or more, got -2"}
    for args, expected in refused.items():
        with pytest.raises(SystemExit):
            stream_main(base + list(args))
        assert expected in capsys.readouterr().err
    assert stream_main(base + ["--input", str(tmp_path / "nope.wav")]) == 2
    assert f"error: --input {tmp_path / 'nope.wav'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
