"""Reading weights from every checkpoint layout, and refusing what would run code."""
from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
import yaml

from bsmamba2_plugin import BSMamba2, CheckpointError, load_model, read_state_dict
from bsmamba2_plugin.checkpoint import load_weights

TINY = dict(dim=16, depth=1, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
            freqs_per_bands=[32, 32, 65], mask_estimator_depth=1)


@pytest.fixture()
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return BSMamba2(**TINY).state_dict()


@pytest.fixture()
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "training": {"model_type": "bsmamba2"}}))
    return path


def write_layouts(weights: dict[str, torch.Tensor], folder: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    paths = {name: folder / f"{name}.ckpt" for name in ("plain", "msst", "lightning", "ddp", "state")}
    torch.save(weights, paths["plain"])
    torch.save({"model_state_dict": weights, "optimizer_state_dict": {}, "epoch": 3, "best_metric": 1.5,
                "all_metrics": {}, "all_losses": [0.1], "optimizer_name": "adamw"}, paths["msst"])
    # The official code's Lightning file: `model.` prefix, plus the featurizer's buffers.
    torch.save({"state_dict": {**{f"model.{k}": v for k, v in weights.items()},
                               "featurizer.window": torch.hann_window(256)},
                "epoch": 7, "global_step": 100}, paths["lightning"])
    torch.save({f"module.{k}": v for k, v in weights.items()}, paths["ddp"])
    torch.save({"state": weights}, paths["state"])
    paths["safetensors"] = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(paths["safetensors"]))
    return paths


def test_every_layout_gives_the_same_weights(weights, tmp_path: Path, config_path: Path) -> None:
    audio = torch.randn(1, 2, 3000)
    outputs = []
    for name, path in write_layouts(weights, tmp_path).items():
        read = read_state_dict(path)
        assert read.keys() == weights.keys(), name
        assert all(torch.equal(read[k], weights[k]) for k in weights), name
        with torch.no_grad():
            outputs.append(load_model(config_path, path)(audio))
    assert all(torch.equal(out, outputs[0]) for out in outputs)


def test_lightning_hyper_parameters_do_not_run_and_do_not_block(weights, tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    hparams = omegaconf.OmegaConf.create({"model": {"dim": 16}, "opt": {"lr": 5e-4}, "targets": ["vocals"]})
    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}, "hyper_parameters": hparams,
                "hparams_type": type(hparams)}, path)
    read = read_state_dict(path)
    assert read.keys() == weights.keys()


class Payload:
    """A pickle that would create a file if it were ever run."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


def test_a_checkpoint_never_runs_code(weights, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"model_state_dict": weights, "extra": Payload(marker)}, path)
    read = read_state_dict(path)  # the weights are read; the payload is an inert stand-in
    assert not marker.exists()
    assert read.keys() == weights.keys() and all(torch.equal(read[k], weights[k]) for k in weights)


def test_msst_checkpoint_with_its_pickled_scheduler_reads(weights, tmp_path: Path) -> None:
    """MSST's train.py saves scheduler.state_dict(); under recent torch that pickles the optimizer
    object (a defaultdict inside), which a weights-only load refuses."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    model = BSMamba2(**TINY)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = ReduceLROnPlateau(optimizer, "max", patience=2, factor=0.95)
    path = tmp_path / "last_bsmamba2.ckpt"
    torch.save({"epoch": 0, "optimizer_name": "Adam", "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": {"scheduler": scheduler, "optimizer": optimizer, "state": optimizer.state},
                "best_metric": 1.0, "all_metrics": {}, "all_losses": [], "model_state_dict": weights}, path)
    read = read_state_dict(path)
    assert all(torch.equal(read[k], weights[k]) for k in weights)


def test_mismatches_are_reported_by_name(weights) -> None:
    model = BSMamba2(**TINY)
    broken = dict(weights)
    del broken["final_norm.gamma"]
    broken["layers.0.0.extra"] = torch.zeros(1)
    broken["band_split.to_features.0.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as error:
        load_weights(model, broken, origin="checkpoint x.ckpt")
    message = str(error.value)
    assert "x.ckpt does not fit" in message
    assert "missing (1): final_norm.gamma" in message
    assert "unexpected (1): layers.0.0.extra" in message
    assert "band_split.to_features.0.1.weight: checkpoint (3, 3) vs model (16, 128)" in message


def test_unreadable_files_are_clear_errors(tmp_path: Path, config_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint .*missing\.ckpt does not exist"):
        read_state_dict(tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*truncated\.ckpt"):
        read_state_dict(truncated)
    empty = tmp_path / "empty.ckpt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match=r"contains no tensors \(keys: epoch\)"):
        read_state_dict(empty)
    other_model = tmp_path / "other.ckpt"
    torch.save(BSMamba2(**{**TINY, "dim": 32}).state_dict(), other_model)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(config_path, other_model)
