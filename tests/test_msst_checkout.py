"""A real checkout of ZFTurbo/Music-Source-Separation-Training, unedited, runs bsmamba2:
train.py and valid.py through the installed .pth hook, inference.py through the explicit
launcher (`python -m msst_compat inference.py ...` with the .pth hook switched off).

Needs MSST_CHECKOUT=<path of the checkout>; skipped without it. MSST_PYTHON may name the
interpreter to run MSST with (default: this one); it needs MSST's imports (wandb, librosa,
omegaconf, audiomentations, pedalboard, matplotlib, torch_log_wmse, auraloss) and, for
valid.py's metrics, numpy < 2.4. torchaudio is the test-only import stand-in of
tests/torchaudio_stand_in (see there and test_msst_package.py for why).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msst_tiny_run import INSTRUMENTS, subprocess_env, write_tiny_config, write_type1_dataset  # noqa: E402

CHECKOUT = os.environ.get("MSST_CHECKOUT")
PYTHON = os.environ.get("MSST_PYTHON", sys.executable)

pytestmark = pytest.mark.skipif(not CHECKOUT, reason="set MSST_CHECKOUT to a checkout of MSST to run these")


def run_script(args: list[str], log: Path, launcher: bool = False) -> str:
    env = subprocess_env(stand_in_torchaudio=True)
    command = [PYTHON, *args]
    if launcher:
        env["MSST_COMPAT_DISABLE"] = "1"  # only the launcher can make bsmamba2 known
        command = [PYTHON, "-m", "msst_compat", *args]
    result = subprocess.run(command, cwd=CHECKOUT, capture_output=True, text=True, env=env, timeout=600)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    checkout = Path(CHECKOUT)
    for marker in ("train.py", "inference.py", "valid.py", "utils/settings.py", "models"):
        assert (checkout / marker).exists(), f"MSST_CHECKOUT={checkout} has no {marker}: not an MSST checkout"
    work = tmp_path_factory.mktemp("msst_checkout")
    tiny = write_tiny_config(work / "tiny.yaml", num_steps=3)
    # No training.model_type in this one: --model_type bsmamba2 alone must select the plugin.
    (work / "plain.yaml").write_text(tiny.read_text().replace("  model_type: bsmamba2\n", ""))
    write_type1_dataset(work / "train", tracks=3, seconds=1.0, with_mixture=False, seed=0)
    write_type1_dataset(work / "valid", tracks=1, seconds=0.5, with_mixture=True, seed=1)
    return work


def test_unedited_checkout(work):
    assert subprocess.run(["git", "-C", CHECKOUT, "diff", "--quiet"]).returncode == 0, "the checkout must be unedited"


def test_train_inference_valid(work):
    import torch

    out = run_script(["train.py", "--model_type", "bsmamba2", "--config_path", str(work / "plain.yaml"),
                      "--results_path", str(work / "results"), "--data_path", str(work / "train"),
                      "--valid_path", str(work / "valid"), "--dataset_type", "1", "--num_workers", "0",
                      "--device_ids", "0"], work / "train.log")
    assert "Model: BSMamba2" in out
    best = sorted((work / "results").glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    assert len(best) == 1 and (work / "results" / "last_bsmamba2.ckpt").is_file()
    loss = float(re.search(r"Training loss: (\S+)", out).group(1))
    assert np.isfinite(loss) and loss > 0

    from bsmamba2_plugin.checkpoint import load_model

    model = load_model(work / "plain.yaml", best[0])  # strict, through this package's loader
    saved = torch.load(best[0], map_location="cpu", weights_only=True)["model_state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

    (work / "mixes").mkdir()
    track = work / "valid" / "track_0"
    mixture, rate = sf.read(track / "mixture.wav", dtype="float32")
    sf.write(work / "mixes" / "song.wav", mixture, rate, subtype="FLOAT")
    # The YAML with training.model_type: bsmamba2, and a CLI type that is not a plugin: the YAML wins.
    run_script(["inference.py", "--model_type", "mdx23c", "--config_path", str(work / "tiny.yaml"),
                "--start_check_point", str(best[0]), "--input_folder", str(work / "mixes"),
                "--store_dir", str(work / "separated"), "--force_cpu"], work / "inference.log", launcher=True)

    out = run_script(["valid.py", "--model_type", "bsmamba2", "--config_path", str(work / "plain.yaml"),
                      "--start_check_point", str(best[0]), "--valid_path", str(work / "valid"),
                      "--store_dir", str(work / "valid_out"), "--device_ids", "0"], work / "valid.log")
    file_sdr = float(re.search(r"sdr_(-?\d+\.\d+)\.ckpt", best[0].name).group(1))
    assert abs(float(re.search(r"Metric avg sdr\s*: (-?\d+\.\d+)", out).group(1)) - file_sdr) < 1e-3
    for stem in INSTRUMENTS:
        estimate, out_rate = sf.read(work / "separated" / "song" / f"{stem}.wav", dtype="float32")
        reference, _ = sf.read(track / f"{stem}.wav", dtype="float32")
        assert out_rate == rate and estimate.shape == reference.shape
        reported = float(re.search(rf"Instr {stem} sdr: (-?\d+\.\d+)", out).group(1))
        measured = 10 * np.log10((np.sum(reference ** 2) + 1e-8) / (np.sum((reference - estimate) ** 2) + 1e-8))
        assert abs(measured - reported) < 0.01, stem
