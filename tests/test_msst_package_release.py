"""The PyPI `msst` package (0.1.0) with `bsmamba2` on MSST's bs_mamba2 YAML and the release's
plain state dict: its get_model_from_config builds BSMamba2 through the msst-compat hook, the
released weights load strictly, and its demix gives what this package's demix gives."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from msst_tiny_run import subprocess_env
from released_layouts import write_msst_config
from test_msst_package import msst_ready
from test_released_weights import random_weights

SCRIPT = """\
import sys, numpy as np, torch
from msst.utils.settings import get_model_from_config
from msst.utils.model_utils import demix
config_path, checkpoint, mixture, out = sys.argv[1:5]
model, config = get_model_from_config("bsmamba2", config_path)
assert "model_type" not in config.training  # MSST's YAML: --model_type alone selects the plugin
model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
stems = demix(config, model.eval(), np.load(mixture), torch.device("cpu"), model_type="bsmamba2")
np.save(out, stems["vocals"])
print(type(model).__name__)
"""


@pytest.mark.slow
def test_msst_package_runs_the_release(tmp_path: Path) -> None:
    if not msst_ready():
        pytest.skip("msst 0.1.0 or its dependencies are not importable")
    config = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True)
    checkpoint = tmp_path / "bs_mamba2_vocals.ckpt"
    torch.save(random_weights(0), checkpoint)
    mixture = (np.random.default_rng(5).standard_normal((2, 12000)) * 0.1).astype(np.float32)
    np.save(tmp_path / "mix.npy", mixture)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(checkpoint), str(tmp_path / "mix.npy"),
                           str(tmp_path / "vocals.npy")], capture_output=True, text=True, timeout=300,
                          env=subprocess_env(stand_in_torchaudio=True))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("BSMamba2")
    from bsmamba2_plugin import load_model
    from bsmamba2_plugin.config import load_config
    from bsmamba2_plugin.separate import demix

    loaded = load_config(config)
    ours = demix(load_model(loaded, checkpoint), mixture, loaded)["vocals"]
    np.testing.assert_allclose(np.load(tmp_path / "vocals.npy"), ours, atol=1e-5)
