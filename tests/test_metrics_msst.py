"""MSST's `--metrics` computed as MSST computes them, each against the real `msst` package's function
on the same audio. Where MSST's function needs torchaudio (bleedless/fullness: AmplitudeToDB;
log_wmse: torch-log-wmse imports torchaudio), which does not load with torch 2.13 here, the
quantity is checked against MSST's formula written out below with librosa / the library itself
(log_wmse in a subprocess with the labelled test-only torchaudio stand-in, whose classes raise if
called: torch-log-wmse never calls them at 44.1 kHz)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba2_plugin import metrics as ours
from bsmamba2_plugin.evaluate.cli import main as evaluate_main

msst_metrics = pytest.importorskip("msst.utils.metrics")
HERE = Path(__file__).parent
RATE = 44100


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(7)
    t = np.arange(RATE * 2) / RATE
    reference = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    reference[:, :RATE] = 0.0  # a silent first second, as vocals have
    estimate = (reference + 0.05 * rng.standard_normal(reference.shape)).astype(np.float32)
    mixture = (reference + 0.3 * rng.standard_normal(reference.shape)).astype(np.float32)
    return reference, estimate, mixture


def test_sdr_family_equals_msst(audio):
    reference, estimate, mixture = audio
    theirs = msst_metrics.get_metrics(["sdr", "k_sdr", "si_sdr", "l1_freq", "aura_stft", "aura_mrstft"],
                                      reference, estimate, mixture)
    mine = ours.stem_metrics(["sdr", "k_sdr", "si_sdr", "l1_freq", "aura_stft", "aura_mrstft"],
                             reference, estimate, mixture, RATE)
    assert list(mine) == ["sdr", "k_sdr", "si_sdr", "l1_freq", "aura_stft", "aura_mrstft"]
    for name, value in mine.items():
        assert value == pytest.approx(theirs[name], rel=1e-5, abs=1e-6), name
    assert ours.k_sdr(25.0) == pytest.approx(msst_metrics.k_sdr(25.0))  # clipped
    assert ours.k_sdr(-30.0) == pytest.approx(msst_metrics.k_sdr(-30.0))


def test_bleedless_and_fullness_follow_msst_formula(audio):
    librosa = pytest.importorskip("librosa")
    reference, estimate, _ = audio
    # MSST's bleed_full, written out: Hann STFT n_fft 4096 hop 1024 (constant padding), magnitude,
    # librosa mel (512), AmplitudeToDB(magnitude, top_db 80) = 20 log10(max(x, 1e-10)) floored at max - 80.
    import torch

    def db(x: np.ndarray) -> np.ndarray:
        spec = torch.stft(torch.from_numpy(x), n_fft=4096, hop_length=1024, window=torch.hann_window(4096),
                          return_complex=True, pad_mode="constant").abs().numpy()
        mel = librosa.filters.mel(sr=RATE, n_fft=4096, n_mels=512) @ spec
        return librosa.amplitude_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)

    diff = db(estimate) - db(reference)
    expected_bleedless = 100 / (diff[diff > 0].mean() + 1)
    expected_fullness = 100 / (-diff[diff < 0].mean() + 1)
    got = ours.stem_metrics(["bleedless", "fullness"], reference, estimate, None, RATE)
    assert got["bleedless"] == pytest.approx(expected_bleedless, rel=1e-4)
    assert got["fullness"] == pytest.approx(expected_fullness, rel=1e-4)
    worse = ours.stem_metrics(["bleedless"], reference, estimate + 0.2 * np.roll(estimate, 5000), None, RATE)
    assert worse["bleedless"] < got["bleedless"]  # more bleed, lower score


LOG_WMSE_SCRIPT = r"""
import json, sys, numpy as np, torch
from torch_log_wmse import LogWMSE
from bsmamba2_plugin.metrics import log_wmse
data = np.load(sys.argv[1])
ref, est, mix = data["ref"], data["est"], data["mix"]
# MSST: log_wmse(mixture (1, C, T), reference, estimate): the MSE is symmetric in the last two
metric = LogWMSE(sample_rate=44100)
theirs = float(metric(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None, :, None],
                      torch.from_numpy(est)[None, :, None]))
print(json.dumps([theirs, log_wmse(ref, est, mix), log_wmse(ref, ref + 10 * (est - ref), mix)]))
"""


def test_log_wmse_is_torch_log_wmse_with_msst_arguments(audio, tmp_path):
    if importlib.util.find_spec("torch_log_wmse") is None:
        pytest.skip("torch-log-wmse is not installed")
    reference, estimate, mixture = (a[:, RATE // 2: RATE + RATE // 2] for a in audio)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE / "torchaudio_stand_in")])}
    np.savez(tmp_path / "audio.npz", ref=reference, est=estimate, mix=mixture)
    done = subprocess.run([sys.executable, "-c", LOG_WMSE_SCRIPT, str(tmp_path / "audio.npz")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    theirs, mine, worse = json.loads(done.stdout.strip().splitlines()[-1])
    assert mine == pytest.approx(theirs, rel=1e-6)
    assert worse < mine  # higher is better


def test_l1_snr_runs_without_torchaudio_and_unknown_metrics_are_named(audio):
    reference, estimate, mixture = audio
    # the formula itself is checked in tests/test_snr_losses.py; here: through stem_metrics, no library
    got = ours.stem_metrics(["l1_snr"], reference, estimate, mixture, RATE)["l1_snr"]
    assert got == pytest.approx(ours.l1_snr(reference, estimate), rel=1e-6)
    assert got < ours.stem_metrics(["l1_snr"], reference, reference, mixture, RATE)["l1_snr"]
    with pytest.raises(ValueError, match="unknown metric"):
        ours.stem_metrics(["sdrr"], reference, estimate, mixture, RATE)


def test_stems_metrics_is_a_dict_by_stem_and_name(audio):
    reference, estimate, mixture = audio
    result = ours.stems_metrics(["sdr", "csdr", "leakage", "si_sdr"], {"vocals": reference, "other": mixture},
                                {"vocals": estimate}, mixture, RATE)
    assert list(result) == ["vocals"] and list(result["vocals"]) == ["sdr", "csdr", "leakage", "si_sdr"]
    assert result["vocals"]["sdr"] == pytest.approx(ours.usdr(reference, estimate))
    assert result["vocals"]["leakage"] == pytest.approx(ours.silent_leakage(reference, estimate, RATE))
    assert ours.METRIC_DIRECTIONS["leakage"] is False and all(ours.METRIC_DIRECTIONS[m] for m in ours.MSST_METRICS)


def test_evaluate_cli_adds_the_requested_metrics(tmp_path, audio, capsys):
    reference, estimate, mixture = audio
    for root, files in (("test", {"vocals": reference, "mixture": mixture}), ("est", {"vocals": estimate})):
        folder = tmp_path / root / "song"
        folder.mkdir(parents=True)
        for stem, data in files.items():
            sf.write(folder / f"{stem}.wav", data.T, RATE, subtype="FLOAT")
    code = evaluate_main(["--valid_path", str(tmp_path / "test"), "--estimates_folder", str(tmp_path / "est"),
                          "--instruments", "vocals", "--store_dir", str(tmp_path / "report"), "--no_figure",
                          "--metrics", "si_sdr", "l1_freq"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Instr vocals si_sdr:" in out and "Metric avg l1_freq" in out
    with open(tmp_path / "report" / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["si_sdr"]) == pytest.approx(msst_metrics.si_sdr(reference, estimate), abs=1e-3)
    assert float(row["l1_freq"]) == pytest.approx(msst_metrics.L1Freq_metric(reference, estimate), abs=1e-3)
