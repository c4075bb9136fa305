"""The two released BSMamba2 weight sets, in their exact file layouts (generated here), work with
every command; wrong files fail with an error that says what does not fit."""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bsmamba2_plugin import BSMamba2, CheckpointError, load_model, read_state_dict
from bsmamba2_plugin.checkpoint import read_checkpoint
from bsmamba2_plugin.config import ConfigError, load_config, resolve_model_type
from released_layouts import (TINY_MODEL, msst_training_dict, official_hparams, write_msst_config,
                              write_official_run)

PAPER_PARAMETERS = 48_098_188


def random_weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = BSMamba2(**TINY_MODEL)
    with torch.no_grad():  # move every weight off its initial value, so raw and EMA differ visibly
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.state_dict()


def separate(model: torch.nn.Module, seconds: float = 0.2) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(1, 2, int(44100 * seconds)))


# --- MSST's release -------------------------------------------------------------------------

def test_msst_yaml_unchanged_builds_the_paper_model(tmp_path: Path) -> None:
    path = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml")
    assert "!!python/tuple" in path.read_text()
    config = load_config(path)
    assert "model_type" not in config.training
    assert resolve_model_type(config) == "bsmamba2"
    model = load_model(path)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS
    assert model.num_stems == 1 and model.stft_kwargs["n_fft"] == 2048 and model.stft_kwargs["hop_length"] == 441
    assert str(model.loaded_weights) == f"weights: none loaded (random initialisation), {PAPER_PARAMETERS:,} parameters"


@pytest.mark.parametrize("value, accepted", [("bs_mamba2", True), ("bsmamba2", True), ("bs_roformer", False)])
def test_training_model_type_absent_or_bs_mamba2_is_bsmamba2(tmp_path: Path, value: str, accepted: bool) -> None:
    path = write_msst_config(tmp_path / "c.yaml", tiny=True, model_type=value)
    config = load_config(path)
    if accepted:
        assert resolve_model_type(config) == "bsmamba2"
        load_model(path)
    else:
        with pytest.raises(ConfigError, match=r"training\.model_type is 'bs_roformer'.*BSMamba2 only"):
            load_model(path)
    no_type = load_config(write_msst_config(tmp_path / "n.yaml", tiny=True))
    assert resolve_model_type(no_type, "bs_mamba2") == "bsmamba2"
    with pytest.raises(ConfigError, match=r"--model_type is 'mdx23c'"):
        resolve_model_type(no_type, "mdx23c")


def test_msst_release_layouts_load_and_say_what_they_are(tmp_path: Path) -> None:
    config = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True)
    weights = random_weights(0)
    plain, dict_file = tmp_path / "bs_mamba2_vocals.ckpt", tmp_path / "model_bs_mamba2_ep_42_sdr_8.8200.ckpt"
    torch.save(weights, plain)
    torch.save(msst_training_dict(weights), dict_file)
    a, b = load_model(config, plain), load_model(config, dict_file)
    assert torch.equal(separate(a), separate(b))
    count = sum(p.numel() for p in a.parameters())
    assert str(a.loaded_weights) == f"weights: {plain} (plain state dict; not recorded in the file), {count:,} parameters"
    assert str(b.loaded_weights) == (f"weights: {dict_file} (MSST training checkpoint; raw, model_state_dict), "
                                     f"{count:,} parameters")
    with pytest.raises(CheckpointError, match=r"ema weights asked for, but an MSST training checkpoint.*raw"):
        load_model(config, dict_file, weights="ema")


# --- the official code's run folder ---------------------------------------------------------

@pytest.fixture()
def official_run(tmp_path: Path) -> tuple[Path, dict, dict]:
    raw, ema = random_weights(0), random_weights(1)
    return write_official_run(tmp_path / "run", raw, ema), raw, ema


def test_official_hparams_become_the_paper_recipe(tmp_path: Path) -> None:
    folder = tmp_path / "run"  # the paper-size config only: building the model is enough
    (folder / "tb_logs").mkdir(parents=True)
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(official_hparams()), folder / "tb_logs" / "hparams.yaml")
    with pytest.warns(UserWarning, match=r"test_dataset\.hop_size=8 s with win_size=8 s is taken as inference\.num_overlap 2"):
        config = load_config(folder)
    model = BSMamba2.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS
    t = config.training
    assert (t.model_type, t.target_instrument, t.instruments) == ("bsmamba2", "vocals", ["vocals", "other", "bass", "drums"])
    assert (t.batch_size, t.gradient_accumulation_steps, t.grad_clip, t.optimizer, t.lr) == (5, 6, 3.0, "adamw", 5e-4)
    assert (t.num_steps, t.num_epochs, t.ema_momentum, t.silent_stem_prob, t.amp_dtype) == (1200, 2000, 0.999, 0.1, "bfloat16")
    check = t.activity_check
    assert (check.sub_chunks, check.rms_floor, check.quantile, check.min_active_fraction) == (10, 1e-3, 0.15, 0.5)
    assert (config.audio.chunk_size, config.inference.chunk_size, config.inference.num_overlap) == (352800, 352800, 2)
    assert tuple(config.model.multi_stft_resolutions_window_sizes) == (4096, 2048, 1024, 512, 256)
    assert config.model.multi_stft_hop_size == 147 and config.model.num_stems == 1
    assert set(config) >= {"audio", "model", "training", "augmentations", "inference"}


def test_official_baseline_and_foreign_keys_are_named(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    hparams = official_hparams(tiny=True)
    hparams["model"]["module_type"] = "transformer"
    OmegaConf.save(OmegaConf.create(hparams), tmp_path / "hparams.yaml")
    with pytest.raises(ConfigError, match=r"module_type is 'transformer'.*BS-RoFormer baseline"):
        load_config(tmp_path / "hparams.yaml")
    hparams = official_hparams(tiny=True)
    hparams["my_extra"] = 1
    hparams["phase_loss"] = True
    OmegaConf.save(OmegaConf.create(hparams), tmp_path / "h2.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(tmp_path / "h2.yaml")
    messages = " | ".join(str(w.message) for w in caught)
    assert "key(s) my_extra of the official config are not used" in messages
    assert "loss switches {'phase_loss': True} differ" in messages


def test_official_run_folder_loads_raw_by_default_and_ema_on_request(official_run) -> None:
    folder, raw, ema = official_run
    ckpt = folder / "weights" / "epoch117-val_usdr10.41.ckpt"
    with pytest.warns(UserWarning):
        model = load_model(folder)
    assert all(torch.equal(model.state_dict()[k], raw[k]) for k in raw)
    count = sum(p.numel() for p in model.parameters())
    assert str(model.loaded_weights) == (
        f"weights: {ckpt} (Lightning checkpoint of the official code; raw, state_dict, step 1000, "
        f"EMA copy also in the file: --weights ema), {count:,} parameters")
    with pytest.warns(UserWarning):
        averaged = load_model(folder / "tb_logs" / "hparams.yaml", ckpt, weights="ema")
    assert all(torch.equal(averaged.state_dict()[k], ema[k]) for k in ema)
    assert "(Lightning checkpoint of the official code; EMA, decay 0.999, step 1000" in str(averaged.loaded_weights)
    assert not torch.equal(separate(model), separate(averaged))


def test_official_run_folder_with_several_checkpoints_asks_which(official_run, tmp_path: Path) -> None:
    folder = write_official_run(tmp_path / "run2", official_run[1], names=("last.ckpt", "epoch03-val_loss0.51.ckpt"))
    with pytest.raises(CheckpointError, match=r"holds 2 checkpoints \(epoch03-val_loss0\.51\.ckpt, last\.ckpt\); pass"):
        load_model(folder)
    with pytest.raises(CheckpointError, match=r"EMA weights asked for, but its optimizer state holds no EMA copy"):
        read_checkpoint(folder / "weights" / "last.ckpt", weights="ema")


# --- the commands -----------------------------------------------------------------------------

def write_tracks(root: Path, count: int = 2, seconds: float = 0.3) -> Path:
    rng = np.random.default_rng(0)
    for k in range(count):
        track = root / f"track {k}"
        track.mkdir(parents=True)
        stems = {name: 0.1 * rng.standard_normal((int(44100 * seconds), 2)).astype(np.float32)
                 for name in ("vocals", "other")}
        for name, audio in stems.items():
            sf.write(track / f"{name}.wav", audio, 44100, subtype="FLOAT")
        sf.write(track / "mixture.wav", stems["vocals"] + stems["other"], 44100, subtype="FLOAT")
    return root


def test_separate_and_evaluate_take_hparams_yaml_and_msst_yaml(official_run, tmp_path: Path) -> None:
    from bsmamba2_plugin.evaluate.cli import main as evaluate_main
    from bsmamba2_plugin.separate.cli import main as separate_main

    folder, raw, _ = official_run
    ckpt = folder / "weights" / "epoch117-val_usdr10.41.ckpt"
    msst_yaml = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True)
    plain = tmp_path / "bs_mamba2_vocals.ckpt"
    torch.save(raw, plain)
    tracks = write_tracks(tmp_path / "test")
    outputs = {}
    for name, config, weights in (("official", folder / "tb_logs" / "hparams.yaml", ckpt), ("msst", msst_yaml, plain)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert separate_main(["--config_path", str(config), "--start_check_point", str(weights), "--input_folder",
                                  str(tracks / "track 0" / "mixture.wav"), "--store_dir", str(tmp_path / name),
                                  "--device", "cpu", "--disable_detailed_pbar"]) == 0
            assert evaluate_main(["--valid_path", str(tracks), "--config_path", str(config), "--start_check_point",
                                  str(weights), "--store_dir", str(tmp_path / f"report_{name}"), "--device", "cpu",
                                  "--no_figure"]) == 0
        written = sorted((tmp_path / name).rglob("*vocals*.wav"))
        assert written, f"{name}: no vocals stem written"
        outputs[name] = sf.read(written[0])[0]
    # Same weights, the official run's inference settings differ only where its config does (batch size).
    assert np.allclose(outputs["official"], outputs["msst"], atol=1e-5)


# --- bad files ----------------------------------------------------------------------------------

@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    return write_msst_config(tmp_path / "config.yaml", tiny=True)


def test_truncated_and_wrong_downloads(tmp_path: Path, tiny_config: Path) -> None:
    good = tmp_path / "bs_mamba2_vocals.ckpt"
    torch.save(random_weights(0), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"cut\.ckpt: the file is truncated or damaged \({len(data) // 2:,} bytes"
                                              r".*Download it again.*about 192 MB"):
        load_model(tiny_config, cut)
    page = tmp_path / "page.ckpt"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(CheckpointError, match=r"page\.ckpt: it is a web page.*download it again"):
        read_state_dict(page)
    archive = tmp_path / "bsmamba2.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bsmamba2/tb_logs/hparams.yaml", "model: {}")
    with pytest.raises(CheckpointError, match=r"bsmamba2\.zip: it is a zip archive of 1 file\(s\).*unpack it"):
        read_state_dict(archive)
    from safetensors.torch import save_file

    tensors = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in random_weights(0).items()}, str(tensors))
    short = tmp_path / "short.safetensors"
    short.write_bytes(tensors.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"short\.safetensors: not a complete \.safetensors file"):
        read_state_dict(short)


def test_other_architectures_are_named(tmp_path: Path, tiny_config: Path) -> None:
    pytest.importorskip("rotary_embedding_torch")
    from ml_collections import ConfigDict
    from msst.models.bs_roformer.bs_roformer import BSRoformer
    from msst.models.bs_roformer.mel_band_roformer import MelBandRoformer
    from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net

    roformer = BSRoformer(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1,
                          freq_transformer_depth=1, freqs_per_bands=(32, 32, 65), dim_head=8, heads=2,
                          stft_n_fft=256, stft_hop_length=64, stft_win_length=256)
    mel = MelBandRoformer(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1,
                          freq_transformer_depth=1, num_bands=4, dim_head=8, heads=2)
    mdx = TFC_TDF_net(ConfigDict({
        "audio": {"n_fft": 256, "hop_length": 64, "dim_f": 128, "num_channels": 2, "chunk_size": 4096},
        "model": {"act": "gelu", "bottleneck_factor": 4, "growth": 8, "norm": "InstanceNorm",
                  "num_blocks_per_scale": 1, "num_channels": 8, "num_scales": 2, "num_subbands": 4, "scale": [2, 2]},
        "training": {"instruments": ["vocals", "other"], "target_instrument": None}}))
    from msst.models.scnet.scnet import SCNet

    cases = ((roformer, r"holds a BS-RoFormer"), (mel, r"holds a Mel-Band RoFormer"), (mdx, r"holds an MDX23C"),
             (SCNet(), r"holds an SCNet"))
    for model, expected in cases:
        path = tmp_path / f"{type(model).__name__}.ckpt"
        torch.save({"model_state_dict": model.state_dict()}, path)
        with pytest.raises(CheckpointError, match=expected + r".*not BSMamba2"):
            load_model(tiny_config, path)


def test_bands_that_do_not_match_the_weights(tmp_path: Path) -> None:
    weights = tmp_path / "w.ckpt"
    torch.save(BSMamba2(**{**TINY_MODEL, "freqs_per_bands": [64, 65]}).state_dict(), weights)
    config = write_msst_config(tmp_path / "c.yaml", tiny=True)
    with pytest.raises(CheckpointError) as error:
        load_model(config, weights)
    message = str(error.value)
    assert "the weights are a BSMamba2 of dim 16, depth 1, 1 stem(s), 2 bands, freqs_per_bands (64, 65)" in message
    assert "the config builds dim 16, depth 1, 1 stem(s), 3 bands, freqs_per_bands (32 x 2, 65)" in message
    assert "the bands do not match: set model.freqs_per_bands: [64, 65]" in message
    paper = tmp_path / "paper.yaml"
    data = yaml.load(config.read_text(), Loader=yaml.FullLoader)
    data["model"].pop("freqs_per_bands")
    data["model"].update(stft_n_fft=2048, stft_win_length=2048, stft_hop_length=441)
    paper.write_text(yaml.dump(data))
    with pytest.raises(CheckpointError, match=r"config builds dim 16, depth 1, 1 stem\(s\), 62 bands, "
                                              r"freqs_per_bands \(2 x 24, 4 x 12, 12 x 8, 24 x 8, 48 x 8, 128, 129\)"):
        load_model(paper, weights)



@pytest.mark.parametrize("model_type, works", [(None, True), ("bs_mamba2", True), ("bs_roformer", False)])
def test_stream_command_with_msst_s_yaml(tmp_path: Path, model_type: str | None, works: bool) -> None:
    """The streaming command: training.model_type absent or bs_mamba2 runs BSMamba2; another type
    stops at start with one line naming it."""
    import subprocess
    import sys

    from bsmamba2_plugin.config import load_config
    from bsmamba2_plugin.separate import demix

    extra = {} if model_type is None else {"model_type": model_type}
    config = write_msst_config(tmp_path / "config_bs_mamba2_vocals.yaml", tiny=True, **extra)
    ckpt = tmp_path / "bs_mamba2_vocals.ckpt"
    torch.save(random_weights(0), ckpt)
    mixture = (np.random.default_rng(3).standard_normal((2, 9000)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "song.wav", mixture.T, 44100, subtype="FLOAT")
    done = subprocess.run([sys.executable, "-m", "bsmamba2_plugin.separate.stream", "--config_path", str(config),
                           "--start_check_point", str(ckpt), "--input", str(tmp_path / "song.wav"), "--store_dir",
                           str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32"],
                          capture_output=True, text=True, timeout=120)
    if not works:
        assert done.returncode == 2
        assert "training.model_type is 'bs_roformer'; this package runs BSMamba2 only" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    stem, _ = sf.read(tmp_path / "out" / "song_vocals.wav", dtype="float32", always_2d=True)
    loaded = load_config(config)
    np.testing.assert_allclose(stem.T, demix(load_model(loaded, ckpt), mixture, loaded)["vocals"], atol=1e-5)
