"""File separation: block-wise reading/writing, formats, rates, channels, errors, the command line."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bsmamba2_plugin.checkpoint import load_model
from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.separate import Separator, demix, separate_track
from bsmamba2_plugin.separate.audio_pipeline import ArraySource
from bsmamba2_plugin.separate.cli import main as cli_main

RATE = 8000


def write_config(path: Path, normalize: bool = False, instruments=("vocals",), target=None, stems=1) -> Path:
    path.write_text(yaml.safe_dump({
        "audio": {"chunk_size": 2048, "sample_rate": RATE},
        "training": {"instruments": list(instruments), "target_instrument": target, "use_amp": True},
        "inference": {"precision": "fp32", "num_overlap": 2, "batch_size": 2, "normalize": normalize},
        "model": {"dim": 16, "depth": 1, "num_stems": stems, "stft_n_fft": 256, "stft_hop_length": 64,
                  "stft_win_length": 256, "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1},
    }))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def setup(tmp_path):
    config_path = write_config(tmp_path / "tiny.yaml")
    torch.manual_seed(0)
    model = load_model(config_path)
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"model_state_dict": model.state_dict(), "epoch": 3}, checkpoint)
    return config_path, checkpoint, model


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, frames)) * 0.1).astype(np.float32)


def test_file_output_equals_in_memory_demix(setup, tmp_path):
    config_path, checkpoint, model = setup
    mixture = noise(2, 9000)
    sf.write(tmp_path / "song.wav", mixture.T, RATE, subtype="FLOAT")
    separator = Separator(config_path, checkpoint, device="cpu")
    written = separator.separate_file(tmp_path / "song.wav", tmp_path / "out")
    assert written == {"vocals": tmp_path / "out" / "song" / "vocals.wav"}
    stem, rate = sf.read(written["vocals"], dtype="float32", always_2d=True)
    assert rate == RATE and sf.info(written["vocals"]).subtype == "FLOAT"
    expected = demix(model, mixture, load_config(config_path), "cpu")["vocals"]
    np.testing.assert_array_equal(stem.T, expected)
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_reads_and_writes_stay_bounded_whatever_the_length(setup):
    config_path, _, model = setup
    separator = Separator(config_path, model=model, device="cpu")
    settings = separator.settings

    class RecordingSource(ArraySource):
        largest = 0

        def read(self, start, stop):
            RecordingSource.largest = max(RecordingSource.largest, stop - start)
            return super().read(start, stop)

    largest_block = [0]
    for frames in (30_000, 120_000):
        blocks = []

        def emit(block):
            largest_block[0] = max(largest_block[0], block.shape[-1])
            blocks.append(block)

        separator._separate_source(RecordingSource(noise(2, frames)), settings, emit)
        assert np.concatenate(blocks, axis=-1).shape == (1, 2, frames)
    bound = (settings.batch_size - 1) * (settings.chunk_size // settings.num_overlap) + settings.chunk_size
    assert RecordingSource.largest <= bound
    assert largest_block[0] <= bound


def test_mono_file_gives_mono_stems(setup, tmp_path):
    config_path, checkpoint, model = setup
    mixture = noise(1, 5000, seed=1)
    sf.write(tmp_path / "mono.flac", mixture.T, RATE, subtype="PCM_24")
    written = Separator(config_path, checkpoint, device="cpu").separate_file(tmp_path / "mono.flac", tmp_path / "o")
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    assert stem.shape == (5000, 1)
    decoded, _ = sf.read(tmp_path / "mono.flac", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(stem.T, demix(model, decoded.T, load_config(config_path))["vocals"])


def test_other_sample_rate_is_converted_and_back(setup, tmp_path):
    config_path, checkpoint, _ = setup
    mixture = noise(2, 11025 * 2, seed=2)  # two seconds at 11025 Hz, model runs at 8000 Hz
    sf.write(tmp_path / "hi.wav", mixture.T, 11025, subtype="FLOAT")
    separator = Separator(config_path, checkpoint, device="cpu")
    written = separator.separate_file(tmp_path / "hi.wav", tmp_path / "o", extract_instrumental=True)
    info = sf.info(written["vocals"])
    assert (info.samplerate, info.frames, info.channels) == (11025, 22050, 2)
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    # the streamed conversion agrees with the in-memory API (one-shot soxr) up to resampler edge effects
    in_memory = separator.separate(mixture, 11025)["vocals"]
    assert in_memory.shape == (2, 22050)
    assert np.abs(stem.T - in_memory)[:, 100:-100].max() < 1e-3
    instrumental, _ = sf.read(written["instrumental"], dtype="float32", always_2d=True)
    np.testing.assert_allclose(instrumental.T, mixture - stem.T, atol=1e-6)


def test_silence_in_silence_out_with_normalization(tmp_path):
    config_path = write_config(tmp_path / "norm.yaml", normalize=True)
    separator = Separator(config_path, device="cpu")
    sf.write(tmp_path / "quiet.wav", np.zeros((3000, 2), np.float32), 11025, subtype="PCM_16")
    written = separator.separate_file(tmp_path / "quiet.wav", tmp_path / "o")
    stem, _ = sf.read(written["vocals"], dtype="float32")
    assert stem.shape == (3000, 2) and np.isfinite(stem).all() and not stem.any()
    out = separator.separate(np.zeros((2, 3000), np.float32), 11025)["vocals"]
    assert np.isfinite(out).all() and not out.any()


def test_normalization_is_undone(tmp_path):
    config_path = write_config(tmp_path / "norm.yaml", normalize=True)
    separator = Separator(config_path, device="cpu")
    mixture = noise(2, 6000, seed=3) + 0.3
    sf.write(tmp_path / "m.wav", mixture.T, RATE, subtype="FLOAT")
    written = separator.separate_file(tmp_path / "m.wav", tmp_path / "o")
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    np.testing.assert_allclose(stem.T, separator.separate(mixture, RATE)["vocals"], atol=1e-5)


def test_more_than_two_channels_error_or_downmix(setup, tmp_path):
    config_path, checkpoint, model = setup
    mixture = noise(6, 4000, seed=4)
    sf.write(tmp_path / "surround.wav", mixture.T, RATE, subtype="FLOAT")
    separator = Separator(config_path, checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"surround.wav: 6 channels.*--downmix"):
        separator.separate_file(tmp_path / "surround.wav", tmp_path / "o")
    written = separator.separate_file(tmp_path / "surround.wav", tmp_path / "o", downmix=True)
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    expected = demix(model, mixture.mean(axis=0, keepdims=True), separator.config)["vocals"]
    np.testing.assert_allclose(stem.T, expected, atol=1e-6)
    with pytest.raises(ValueError, match="6 channels"):
        separator.separate(mixture, RATE)


def test_separate_track_api(setup):
    config_path, _, model = setup
    config = load_config(config_path)
    mixture = noise(2, 4000, seed=5)
    out = separate_track(model, mixture, RATE, config)
    np.testing.assert_array_equal(out["vocals"], demix(model, mixture, config)["vocals"])
    with pytest.raises(ValueError, match=r"\(samples, channels\)"):
        separate_track(model, mixture.T, RATE, config)
    with pytest.raises(ValueError, match="sample_rate"):
        separate_track(model, mixture, 0, config)


def test_failed_file_leaves_nothing_behind(setup, tmp_path):
    config_path, checkpoint, _ = setup
    separator = Separator(config_path, checkpoint, device="cpu")
    calls = []

    def explode(*args):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("model failed midway")
        return original(*args)

    original = separator.model.forward
    separator.model.forward = explode
    sf.write(tmp_path / "long.wav", noise(2, 20000).T, RATE, subtype="FLOAT")
    with pytest.raises(RuntimeError, match="midway"):
        separator.separate_file(tmp_path / "long.wav", tmp_path / "o")
    assert [p for p in (tmp_path / "o").rglob("*") if p.is_file()] == []


def test_cli_folder_with_a_broken_file(setup, tmp_path, capsys):
    config_path, checkpoint, model = setup
    folder = tmp_path / "in"
    (folder / "album").mkdir(parents=True)
    sf.write(folder / "album" / "one.wav", noise(2, 3000).T, RATE, subtype="FLOAT")
    sf.write(folder / "two.flac", noise(2, 3000, seed=9).T, RATE, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    code = cli_main(["--config_path", str(config_path), "--start_check_point", str(checkpoint),
                     "--input_folder", str(folder), "--store_dir", str(tmp_path / "out"),
                     "--filename_template", "{file_name}_{instr}", "--flac_file", "--pcm_type", "PCM_16",
                     "--device", "cpu", "--disable_detailed_pbar"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 file(s) failed" in err and "broken.wav" in err and "cannot decode" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_vocals.flac", "two_vocals.flac"]
    assert sf.info(tmp_path / "out" / "one_vocals.flac").subtype == "PCM_16"


def test_cli_single_file_and_default_names(setup, tmp_path):
    config_path, checkpoint, _ = setup
    sf.write(tmp_path / "track.wav", noise(2, 3000).T, RATE, subtype="FLOAT")
    completed = subprocess.run(
        [sys.executable, "-m", "bsmamba2_plugin.separate", "--config_path", str(config_path),
         "--start_check_point", str(checkpoint), "--input_folder", str(tmp_path / "track.wav"),
         "--store_dir", str(tmp_path / "out"), "--extract_instrumental", "--force_cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "track").iterdir()) == ["instrumental.wav", "vocals.wav"]


def test_cli_setup_errors_are_clear(setup, tmp_path, capsys):
    config_path, checkpoint, _ = setup
    sf.write(tmp_path / "t.wav", noise(2, 1000).T, RATE)
    base = ["--config_path", str(config_path), "--input_folder", str(tmp_path / "t.wav"),
            "--store_dir", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(base + ["--start_check_point", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BSMAMBA2_CPU_GEMM", "blas")
        assert cli_main(base + ["--start_check_point", str(checkpoint)]) == 2
    assert "error: BSMAMBA2_CPU_GEMM='blas' is not a CPU GEMM choice" in capsys.readouterr().err
    other = load_model(write_config(tmp_path / "two.yaml", instruments=("vocals", "other"), stems=2))
    torch.save(other.state_dict(), tmp_path / "two_stems.ckpt")
    assert cli_main(base + ["--start_check_point", str(tmp_path / "two_stems.ckpt")]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    empty = ["--config_path", str(config_path), "--input_folder", str(tmp_path / "nothing"),
             "--store_dir", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(empty) == 2
    assert "holds no files to separate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(base + ["--lora_checkpoint_peft", "x.bin"])
    assert "does not support" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(base + ["--bigshifts", "0"])
    assert "--bigshifts must be 1 or more" in capsys.readouterr().err
    for template, expected in (("{nope}", "uses unknown field(s) nope"), ("../{instr}", "gives an unsafe path")):
        assert cli_main(base + ["--start_check_point", str(checkpoint), "--filename_template", template]) == 2
        assert f"error: filename_template {template!r} {expected}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    typo = yaml.safe_load(config_path.read_text())
    typo["model"]["dimm"] = 32
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_main(base[:1] + [str(tmp_path / "typo.yaml")] + base[2:]) == 2
    assert "error: unknown key(s) in the model section: model.dimm; BSMamba2 takes" in capsys.readouterr().err
    assert not [w for w in caught if "dimm" in str(w.message)]  # refused, not also called "ignored"
    if not torch.backends.mps.is_available():
        assert cli_main(base + ["--device", "mps"]) == 2
        assert "MPS (Apple's Metal backend) is not available" in capsys.readouterr().err
    assert cli_main(base + ["--device", "cuda"] if not torch.cuda.is_available() else base + ["--device", "tpu"]) == 2


def test_cli_names_the_library_of_its_fp32_products(setup, tmp_path, capsys, monkeypatch):
    config_path, checkpoint, _ = setup
    sf.write(tmp_path / "track.wav", noise(2, 3000).T, RATE, subtype="FLOAT")
    monkeypatch.setenv("BSMAMBA2_CPU_GEMM", "mkl")
    for precision in ("fp32", "bf16"):
        with warnings.catch_warnings():  # bf16 where this CPU lacks it warns that it will be slow
            warnings.simplefilter("ignore")
            assert cli_main(["--config_path", str(config_path), "--start_check_point", str(checkpoint),
                             "--input_folder", str(tmp_path / "track.wav"), "--store_dir", str(tmp_path / precision),
                             "--force_cpu", "--precision", precision]) == 0
        line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("Device: cpu."))
        products = ", its products through torch's own (MKL on x86) (BSMAMBA2_CPU_GEMM=mkl)."
        assert (products in line) is (precision == "fp32"), line
