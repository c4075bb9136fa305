"""Every shipped config loads as MSST loads it and builds its model through the registry; a
wrong or missing key fails with the key's path in the message."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from msst_registry import get_model_from_config, load_msst_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert len(CONFIGS) >= 2, "configs/ should hold the paper vocals, small vocals and four-stem configs"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
    config = load_msst_config(path)
    assert config.training.model_type == "bsmamba2"
    for section in ("audio", "training", "model", "inference"):
        assert section in config, f"{path.name}: no {section} section"
    # The command-line type does not matter: training.model_type selects bsmamba2, as in MSST.
    model, loaded = get_model_from_config("mdx23c", path)
    assert type(model).__name__ == "BSMamba2"
    target = loaded.training.get("target_instrument")
    assert model.num_stems == (1 if target else len(loaded.training.instruments))
    assert model.stft_kwargs["n_fft"] == loaded.model.get("stft_n_fft", 2048)
    assert loaded.audio.chunk_size > 0 and loaded.audio.get("sample_rate", 44100) == 44100


def _variant(path: Path, tmp_path: Path, edit) -> Path:
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=yaml.FullLoader)
    edit(data)
    out = tmp_path / f"edited_{path.name}"
    out.write_text(yaml.dump(data), encoding="utf-8")
    return out


@pytest.mark.parametrize("path", CONFIGS[:1], ids=lambda p: p.name)
def test_wrong_or_missing_keys_name_their_path(path, tmp_path):
    def unknown_model_key(data):
        data["model"]["dimm"] = 3

    with pytest.raises(ValueError, match=r"dimm") as caught:
        get_model_from_config("bsmamba2", _variant(path, tmp_path, unknown_model_key))
    assert "model" in str(caught.value)

    def no_instruments(data):
        del data["training"]["instruments"]

    with pytest.raises(ValueError, match=r"training\.instruments: missing"):
        get_model_from_config("bsmamba2", _variant(path, tmp_path, no_instruments))

    def no_model(data):
        del data["model"]

    with pytest.raises(ValueError, match=r"model: missing section"):
        get_model_from_config("bsmamba2", _variant(path, tmp_path, no_model))

    def wrong_stems(data):
        data["model"]["num_stems"] = 3

    with pytest.raises(ValueError, match=r"model\.num_stems=3 but training\."):
        get_model_from_config("bsmamba2", _variant(path, tmp_path, wrong_stems))

    def bad_bands(data):
        data["model"]["freqs_per_bands"] = [1, 2]

    with pytest.raises(ValueError, match=r"model\.freqs_per_bands"):
        get_model_from_config("bsmamba2", _variant(path, tmp_path, bad_bands))
