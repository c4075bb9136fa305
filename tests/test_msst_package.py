"""The real PyPI `msst` package (0.1.0) trains, separates and validates `bsmamba2` through the
installed msst-compat hook: msst-train -> checkpoint -> msst-inference, msst-valid, msst.Separator.

Two things here are not the real thing, both labelled:
- torchaudio: msst imports `torchaudio.transforms` at import time and no PyPI torchaudio loads
  with this project's CPU torch 2.13, so the subprocesses get tests/torchaudio_stand_in on
  PYTHONPATH: an import-only stand-in whose classes raise if ever called. The default
  masked_loss and the sdr metric never call them.
- msst 0.1.0's CPU training: `initialize_model_and_device` returns the *string* 'cpu' when no
  CUDA is present and `compute_training_loss` then reads `device.type` (AttributeError), so
  msst-train cannot train on any CPU-only machine. CPU_TRAIN below runs msst's own `msst-train`
  entry point (msst.cli:train) after turning that string into torch.device('cpu'), and nothing else.

Skipped when msst or its dependencies are missing, unless MSST_TESTS_REQUIRED=1 (set in CI).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msst_tiny_run import (  # noqa: E402
    INSTRUMENTS,
    console_script,
    subprocess_env,
    write_tiny_config,
    write_type1_dataset,
)

CPU_TRAIN = """\
import sys, torch
import msst._training as training
_original = training.initialize_model_and_device
def initialize_model_and_device(model, device_ids):  # msst 0.1.0 returns 'cpu' as a str on CPU
    device, model = _original(model, device_ids)
    return (torch.device(device) if isinstance(device, str) else device), model
training.initialize_model_and_device = initialize_model_and_device
from msst.cli import train
sys.argv[0] = "msst-train"
train()
"""


def msst_ready() -> bool:
    env = subprocess_env(stand_in_torchaudio=True)
    probe = subprocess.run([sys.executable, "-c", "import msst._training, msst._inference, msst._validation, wandb"],
                           capture_output=True, text=True, env=env)
    if probe.returncode == 0:
        return True
    if os.environ.get("MSST_TESTS_REQUIRED"):
        pytest.fail(f"msst cannot be imported but MSST_TESTS_REQUIRED is set:\n{probe.stderr[-2000:]}")
    return False


def run_checked(command: list[str], cwd: Path, log: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                            env=subprocess_env(stand_in_torchaudio=True), timeout=600)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return result.stdout + result.stderr


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MSST's sdr metric (utils/metrics.py) for one stem."""
    num = np.sum(np.square(reference)) + 1e-8
    den = np.sum(np.square(reference - estimate)) + 1e-8
    return float(10 * np.log10(num / den))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not msst_ready():
        pytest.skip("the msst package or its dependencies are not installed")
    work = tmp_path_factory.mktemp("msst_package")
    config = write_tiny_config(work / "tiny.yaml", num_steps=3)
    write_type1_dataset(work / "train", tracks=3, seconds=1.0, with_mixture=False, seed=0)
    write_type1_dataset(work / "valid", tracks=1, seconds=0.5, with_mixture=True, seed=1)
    (work / "train_cpu.py").write_text(CPU_TRAIN)
    # --model_type says mdx23c, the YAML's training.model_type: bsmamba2 wins (MSST's rule).
    out = run_checked([sys.executable, "train_cpu.py", "--model_type", "mdx23c", "--config_path", str(config),
                       "--results_path", "results", "--data_path", "train", "--valid_path", "valid",
                       "--dataset_type", "1", "--num_workers", "0", "--device_ids", "0", "--seed", "0"],
                      cwd=work, log=work / "train.log")
    return work, config, out


def test_training_writes_msst_checkpoints(trained):
    import torch

    work, config, out = trained
    assert "Model: BSMamba2" in out
    results = work / "results"
    best = sorted(results.glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    assert len(best) == 1 and (results / "last_bsmamba2.ckpt").is_file()
    checkpoint = torch.load(best[0], map_location="cpu", weights_only=True)
    assert {"model_state_dict", "optimizer_state_dict", "epoch", "best_metric"} <= set(checkpoint)
    assert checkpoint["epoch"] == 0
    history = [json.loads(line) for line in (results / "training_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"]) and history[0]["train_loss"] > 0
    file_sdr = float(re.search(r"sdr_(-?\d+\.\d+)\.ckpt", best[0].name).group(1))
    assert abs(history[0]["metrics_avg"]["sdr"] - file_sdr) < 1e-4

    # The checkpoint loads strictly into this package's own loader.
    from bsmamba2_plugin.checkpoint import load_model

    model = load_model(config, best[0])
    assert model.num_stems == 2
    state = checkpoint["model_state_dict"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_inference_validation_and_separator_agree(trained):
    work, config, _ = trained
    best = next((work / "results").glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    (work / "mixes").mkdir()
    track = work / "valid" / "track_0"
    mixture, rate = sf.read(track / "mixture.wav", dtype="float32")
    sf.write(work / "mixes" / "song.wav", mixture, rate, subtype="FLOAT")

    run_checked([console_script("msst-inference"), "--model_type", "bsmamba2", "--config_path", str(config),
                 "--start_check_point", str(best), "--input_folder", "mixes", "--store_dir", "separated",
                 "--force_cpu"], cwd=work, log=work / "inference.log")
    separated = {}
    for stem in INSTRUMENTS:
        audio, out_rate = sf.read(work / "separated" / "song" / f"{stem}.wav", dtype="float32")
        assert out_rate == rate and audio.shape == mixture.shape and np.isfinite(audio).all()
        separated[stem] = audio

    out = run_checked([console_script("msst-valid"), "--model_type", "bsmamba2", "--config_path", str(config),
                       "--start_check_point", str(best), "--valid_path", "valid", "--store_dir", "valid_out",
                       "--device_ids", "0"], cwd=work, log=work / "valid.log")
    reported = {stem: float(re.search(rf"Instr {stem} sdr: (-?\d+\.\d+)", out).group(1)) for stem in INSTRUMENTS}
    average = float(re.search(r"Metric avg sdr\s*: (-?\d+\.\d+)", out).group(1))
    file_sdr = float(re.search(r"sdr_(-?\d+\.\d+)\.ckpt", best.name).group(1))
    assert abs(average - file_sdr) < 1e-3  # the stored weights reproduce the training-time validation
    for stem in INSTRUMENTS:
        reference, _ = sf.read(track / f"{stem}.wav", dtype="float32")
        # Inference's files and validation's numbers come from the same model and the same demix.
        assert abs(sdr(reference, separated[stem]) - reported[stem]) < 0.01, stem
    assert sorted(p.name for p in (work / "valid_out").glob("*.flac")) == [f"track_0_{s}.flac" for s in sorted(INSTRUMENTS)]

    code = (
        "import numpy as np, soundfile as sf, msst\n"
        f"sep = msst.Separator(config_path={str(config)!r}, checkpoint_path={str(best)!r}, model_type='bsmamba2', "
        "force_cpu=True, detailed_progress=False)\n"
        f"mix, rate = sf.read({str(track / 'mixture.wav')!r}, dtype='float32')\n"
        "stems = sep.separate(mix.T)\n"
        "np.save('separator_vocals.npy', np.asarray(stems['vocals']))\n"
        "print('STEMS', sorted(stems))\n"
    )
    out = run_checked([sys.executable, "-c", code], cwd=work, log=work / "separator.log")
    assert "STEMS ['other', 'vocals']" in out
    vocals = np.load(work / "separator_vocals.npy")
    vocals = vocals.T if vocals.shape[0] == 2 else vocals
    assert np.allclose(vocals, separated["vocals"], atol=1e-4)
