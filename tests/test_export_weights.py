"""`python -m bsmamba2_plugin.export_weights`: any checkpoint -> plain state dict or .safetensors."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from bsmamba2_plugin import load_model
from bsmamba2_plugin.export_weights import main as export_main
from released_layouts import TINY_MODEL, msst_training_dict, write_msst_config, write_official_run
from test_released_weights import random_weights, separate


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, dict, dict]:
    raw, ema = random_weights(0), random_weights(1)
    return write_official_run(tmp_path / "run", raw, ema), raw, ema


def test_official_run_to_safetensors_and_yaml_for_msst_tools(run, tmp_path: Path) -> None:
    from safetensors import safe_open

    folder, _, ema = run
    out, yaml_out = tmp_path / "bsmamba2_official_ema.safetensors", tmp_path / "bsmamba2_official.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export_main(["--config_path", str(folder), "--output", str(out), "--weights", "ema",
                            "--write_config", str(yaml_out)]) == 0
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
        exported = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["bsmamba2_weights"] == "ema" and metadata["source"] == "epoch117-val_usdr10.41.ckpt"
    assert exported.keys() == ema.keys() and all(torch.equal(exported[k], ema[k]) for k in ema)
    # The written YAML is an MSST config (no hparams.yaml needed any more) and says which weights.
    model = load_model(yaml_out, out)
    assert "(.safetensors; EMA, exported from epoch117-val_usdr10.41.ckpt)" in str(model.loaded_weights)
    assert "!!python/tuple" in yaml_out.read_text() and "model_type: bsmamba2" in yaml_out.read_text()


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_any_layout_to_a_plain_state_dict_that_weights_only_loads(tmp_path: Path, suffix: str) -> None:
    weights = random_weights(2)
    config = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True)
    source = tmp_path / "model_bs_mamba2_ep_42_sdr_8.8200.ckpt"
    torch.save(msst_training_dict({f"module.{k}": v for k, v in weights.items()}), source)
    out = tmp_path / f"plain{suffix}"
    result = subprocess.run([sys.executable, "-m", "bsmamba2_plugin.export_weights", "--config_path", str(config),
                             "--start_check_point", str(source), "--output", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"weights: {source} (MSST training checkpoint; raw, model_state_dict)" in result.stdout
    # What MSST-WebUI does with a .pth/.ckpt: torch.load(weights_only=True) and load_state_dict.
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert list(state) == list(load_model(config).state_dict())
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert torch.equal(separate(load_model(config, out)), separate(load_model(config, source)))


def test_refusals_write_nothing(tmp_path: Path, capsys) -> None:
    config = write_msst_config(tmp_path / "c.yaml", tiny=True)
    other = tmp_path / "other.ckpt"
    from bsmamba2_plugin import BSMamba2

    torch.save(BSMamba2(**{**TINY_MODEL, "dim": 32}).state_dict(), other)
    out = tmp_path / "x.safetensors"
    assert export_main(["--config_path", str(config), "--start_check_point", str(other), "--output", str(out)]) == 2
    assert "does not fit the model built from the config" in capsys.readouterr().err and not out.exists()
    assert export_main(["--config_path", str(config), "--start_check_point", str(other), "--output",
                        str(tmp_path / "x.onnx")]) == 2
    assert "name it *.safetensors or one of *.ckpt" in capsys.readouterr().err
    assert export_main(["--config_path", str(config), "--output", str(out)]) == 2
    assert "no checkpoint to export" in capsys.readouterr().err
    assert export_main(["--config_path", str(config), "--start_check_point", str(other), "--output", str(other)]) == 2
    assert "is the checkpoint being read" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.partial"))
