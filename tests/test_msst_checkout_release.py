"""MSST's own scripts, unedited, with `--model_type bsmamba2` on MSST's bs_mamba2 YAML and the
released weights' layouts: inference.py, valid.py, and train.py fine-tuning from
`--start_check_point`; and the official run, exported to a state dict + MSST YAML, in inference.py.

Needs MSST_CHECKOUT (and optionally MSST_PYTHON), as tests/test_msst_checkout.py, whose runner
and torchaudio stand-in it uses. MSST's YAML is generated in tests/released_layouts.py, key for
key; with a checkout, the first test checks it against the checkout's own file.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bsmamba2_plugin import load_model, read_state_dict
from bsmamba2_plugin.separate import demix
from msst_tiny_run import write_type1_dataset
from released_layouts import msst_bs_mamba2_vocals, write_msst_config, write_official_run
from test_msst_checkout import CHECKOUT, run_script
from test_released_weights import random_weights

pytestmark = pytest.mark.skipif(not CHECKOUT, reason="set MSST_CHECKOUT to a checkout of MSST to run these")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("msst_release")
    write_msst_config(work / "config_bs_mamba2_vocals.yaml", tiny=True)
    torch.save(random_weights(0), work / "bs_mamba2_vocals.ckpt")  # the release: a plain state dict
    write_type1_dataset(work / "train", tracks=3, seconds=1.0, with_mixture=False, seed=0)
    write_type1_dataset(work / "valid", tracks=1, seconds=0.5, with_mixture=True, seed=1)
    (work / "mixes").mkdir()
    mixture, rate = sf.read(work / "valid" / "track_0" / "mixture.wav", dtype="float32")
    sf.write(work / "mixes" / "song.wav", mixture, rate, subtype="FLOAT")
    return work


def test_generated_yaml_is_msst_s_file() -> None:
    with open(Path(CHECKOUT) / "configs" / "config_bs_mamba2_vocals.yaml", encoding="utf-8") as f:
        real = yaml.load(f, Loader=yaml.FullLoader)
    assert real == msst_bs_mamba2_vocals(tiny=False)


def our_vocals(config: Path, checkpoint: Path, mixture: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from bsmamba2_plugin.config import load_config

        loaded = load_config(config)
        return demix(load_model(loaded, checkpoint), mixture.T, loaded)["vocals"].T


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_inference_and_valid_with_the_release(work: Path) -> None:
    config, ckpt = work / "config_bs_mamba2_vocals.yaml", work / "bs_mamba2_vocals.ckpt"
    run_script(["inference.py", "--model_type", "bsmamba2", "--config_path", str(config), "--start_check_point",
                str(ckpt), "--input_folder", str(work / "mixes"), "--store_dir", str(work / "separated"),
                "--force_cpu"], work / "inference.log")
    mixture, _ = sf.read(work / "mixes" / "song.wav", dtype="float32")
    written, _ = sf.read(work / "separated" / "song" / "vocals.wav", dtype="float32")
    assert np.allclose(written, our_vocals(config, ckpt, mixture), atol=1e-4)
    out = run_script(["valid.py", "--model_type", "bsmamba2", "--config_path", str(config), "--start_check_point",
                      str(ckpt), "--valid_path", str(work / "valid"), "--store_dir", str(work / "valid_out"),
                      "--device_ids", "0"], work / "valid.log")
    assert re.search(r"Instr vocals sdr: -?\d+\.\d+", out)


@pytest.mark.slow
def test_train_py_fine_tunes_from_the_release(work: Path) -> None:
    config, ckpt = work / "config_bs_mamba2_vocals.yaml", work / "bs_mamba2_vocals.ckpt"
    out = run_script(["train.py", "--model_type", "bsmamba2", "--config_path", str(config), "--start_check_point",
                      str(ckpt), "--results_path", str(work / "results"), "--data_path", str(work / "train"),
                      "--valid_path", str(work / "valid"),
                      "--dataset_type", "1", "--num_workers", "0", "--device_ids", "0"], work / "train.log")
    assert "Model: BSMamba2" in out
    trained = read_state_dict(work / "results" / "last_bsmamba2.ckpt")  # MSST's dict pickles more than tensors
    start = random_weights(0)
    moved = max(float((trained[k] - v).abs().max()) for k, v in start.items())
    assert 0 < moved < 0.05, moved  # trained a little, from the released weights


@pytest.mark.slow
def test_official_run_exported_for_msst_inference(work: Path) -> None:
    from bsmamba2_plugin.export_weights import main as export_main

    run = write_official_run(work / "official_run", random_weights(3), random_weights(4))
    state, config = work / "bsmamba2_official.ckpt", work / "bsmamba2_official.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export_main(["--config_path", str(run), "--output", str(state), "--write_config", str(config)]) == 0
    run_script(["inference.py", "--model_type", "bsmamba2", "--config_path", str(config), "--start_check_point",
                str(state), "--input_folder", str(work / "mixes"), "--store_dir", str(work / "separated_official"),
                "--force_cpu"], work / "inference_official.log")
    mixture, _ = sf.read(work / "mixes" / "song.wav", dtype="float32")
    written, _ = sf.read(work / "separated_official" / "song" / "vocals.wav", dtype="float32")
    assert np.allclose(written, our_vocals(run / "tb_logs" / "hparams.yaml",
                                           run / "weights" / "epoch117-val_usdr10.41.ckpt", mixture), atol=1e-4)
