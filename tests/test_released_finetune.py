"""Fine-tuning the released weights with our trainer: `--start_check_point` with MSST's bs_mamba2
YAML and a plain state dict, and with the official run's hparams.yaml and its Lightning file."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from bsmamba2_plugin import BSMamba2
from released_layouts import TINY_MODEL, write_msst_config, write_official_run
from test_released_weights import random_weights
from train_fixtures import RATE, make_tracks, run_train, tone


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["msst", "official"])
def test_fine_tuning_starts_from_the_released_weights(tmp_path: Path, layout: str) -> None:
    start = random_weights(0)
    if layout == "msst":
        config = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True)
        checkpoint = tmp_path / "bs_mamba2_vocals.ckpt"
        torch.save(start, checkpoint)
    else:
        folder = write_official_run(tmp_path / "run", start, random_weights(1))
        config, checkpoint = folder / "tb_logs" / "hparams.yaml", folder / "weights" / "epoch117-val_usdr10.41.ckpt"
    data = make_tracks(tmp_path / "train", count=3, seconds=0.5)
    if layout == "official":  # its run mixes the four MUSDB18 stems
        for k, track in enumerate(sorted(data.iterdir())):
            for j, stem in enumerate(("bass", "drums")):
                sf.write(track / f"{stem}.wav", tone(0.5, 55 + 30 * j + 5 * k, seed=200 + 10 * j + k), RATE,
                         subtype="FLOAT")
    results = tmp_path / "results"
    result = run_train(["--config_path", str(config), "--start_check_point", str(checkpoint), "--data_path", str(data),
                        "--results_path", str(results), "--no_tensorboard"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Loaded weights from {checkpoint}" in result.stdout
    saved = torch.load(results / "last_bsmamba2.ckpt", map_location="cpu", weights_only=True)
    trained = saved.get("raw_model_state_dict", saved["model_state_dict"])
    moved = distance(trained, start)
    # It trained (the weights moved) and it started from the released weights, not from scratch.
    assert moved > 0
    assert moved < distance(BSMamba2(**TINY_MODEL).state_dict(), start) / 10
