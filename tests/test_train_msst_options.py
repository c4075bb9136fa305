"""MSST train.py's options in the standalone trainer: config-key warnings, augmentations, losses,
fine-tuning flags. Losses are compared with the real `msst` package's `choice_loss`; it imports
torchaudio at import time, which does not load with torch 2.13 here, so that comparison runs in a
subprocess with the test-only torchaudio stand-in (tests/torchaudio_stand_in: every class raises
if called; the compared losses never call torchaudio)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ml_collections import ConfigDict

from bsmamba2_plugin import config_keys
from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.train.augmentations import Augmentations, ChunkSizeAugmentation
from bsmamba2_plugin.train.dataset import MSSTrainingDataset
from bsmamba2_plugin.train.errors import TrainingConfigError
from bsmamba2_plugin.train.loss import MSSTLoss
from train_fixtures import make_tracks, run_train, tiny_config, with_keys

HERE = Path(__file__).parent
STAND_IN = HERE / "torchaudio_stand_in"
MSST_CONFIGS = Path("/tmp/msst/configs")


# --------------------------------------------------------------------------- config keys
def test_every_unused_key_warns_once_with_its_path_and_file(tmp_path):
    path = with_keys(tiny_config(tmp_path / "c.yaml"),
                     augmentations={"mp3_compresion_on_mixture": 0.1, "vocals": {"pitch_shfit": 0.5}},
                     training={"other_fix": True, "no_such_key": 1}, inference={"dim_t": 801, "precision": "fp32"})
    config = load_config(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = config_keys.warn_unused_keys(config, str(path))
        again = config_keys.warn_unused_keys(config, str(path))
    assert sorted(paths) == sorted(again) == ["augmentations.mp3_compresion_on_mixture",
                                              "augmentations.vocals.pitch_shfit", "training.no_such_key",
                                              "training.other_fix"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4  # once each, not again on the second call
    assert any(m.startswith(f"{path}: config key augmentations.mp3_compresion_on_mixture is ignored") for m in messages)


def test_shipped_configs_and_msst_augmentation_sections_are_fully_known():
    for path in sorted((HERE.parent / "configs").glob("*.yaml")):
        assert config_keys.unused_keys(load_config(path)) == [], path
    msst_config = MSST_CONFIGS / "config_musdb18_mdx23c.yaml"
    if not msst_config.is_file():
        pytest.skip("MSST checkout at /tmp/msst not present (fetch github:ZFTurbo/Music-Source-Separation-Training)")
    config = ConfigDict(yaml.load(msst_config.read_text(), Loader=yaml.FullLoader))
    # every section but the model's, which BSMamba2's constructor checks (mdx23c's keys are refused there)
    assert config_keys.unused_keys(config) == []


def test_the_trainer_names_unused_keys_at_start(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    config = with_keys(tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1),
                       augmentations={"mp3_compresion_on_mixture": 0.1})
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                        str(tmp_path / "r"), "--no_tensorboard"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("config key augmentations.mp3_compresion_on_mixture is ignored") == 1


# -------------------------------------------------------------------------- augmentations
def augmented_config(tmp_path: Path, **augmentations):
    path = with_keys(tiny_config(tmp_path / "aug.yaml"), augmentations=augmentations)
    return load_config(path)


# MSST's configs/config_musdb18_mdx23c.yaml augmentations (ccc011a), values as there except every
# probability set to 1 so that each effect runs; time_stretch and gaussian_noise from its other configs.
MSST_AUGMENTATIONS = """
enable: true
loudness: true
loudness_min: 0.5
loudness_max: 1.5
mixup: true
mixup_probs: [0.2, 0.02]
mixup_loudness_min: 0.5
mixup_loudness_max: 1.5
mp3_compression_on_mixture: 1.0
mp3_compression_on_mixture_bitrate_min: 32
mp3_compression_on_mixture_bitrate_max: 320
mp3_compression_on_mixture_backend: lameenc
all:
  channel_shuffle: 1.0
  random_inverse: 1.0
  random_polarity: 1.0
  mp3_compression: 1.0
  mp3_compression_min_bitrate: 32
  mp3_compression_max_bitrate: 320
  mp3_compression_backend: lameenc
  pedalboard_reverb: 1.0
  pedalboard_reverb_room_size_min: 0.1
  pedalboard_reverb_room_size_max: 0.9
  pedalboard_reverb_damping_min: 0.1
  pedalboard_reverb_damping_max: 0.9
  pedalboard_reverb_wet_level_min: 0.1
  pedalboard_reverb_wet_level_max: 0.9
  pedalboard_reverb_dry_level_min: 0.1
  pedalboard_reverb_dry_level_max: 0.9
  pedalboard_reverb_width_min: 0.9
  pedalboard_reverb_width_max: 1.0
  pedalboard_chorus: 1.0
  pedalboard_chorus_rate_hz_min: 1.0
  pedalboard_chorus_rate_hz_max: 7.0
  pedalboard_chorus_depth_min: 0.25
  pedalboard_chorus_depth_max: 0.95
  pedalboard_chorus_centre_delay_ms_min: 3
  pedalboard_chorus_centre_delay_ms_max: 10
  pedalboard_chorus_feedback_min: 0.0
  pedalboard_chorus_feedback_max: 0.5
  pedalboard_chorus_mix_min: 0.1
  pedalboard_chorus_mix_max: 0.9
  pedalboard_phazer: 1.0
  pedalboard_phazer_rate_hz_min: 1.0
  pedalboard_phazer_rate_hz_max: 10.0
  pedalboard_phazer_depth_min: 0.25
  pedalboard_phazer_depth_max: 0.95
  pedalboard_phazer_centre_frequency_hz_min: 200
  pedalboard_phazer_centre_frequency_hz_max: 12000
  pedalboard_phazer_feedback_min: 0.0
  pedalboard_phazer_feedback_max: 0.5
  pedalboard_phazer_mix_min: 0.1
  pedalboard_phazer_mix_max: 0.9
  pedalboard_distortion: 1.0
  pedalboard_distortion_drive_db_min: 1.0
  pedalboard_distortion_drive_db_max: 25.0
  pedalboard_pitch_shift: 1.0
  pedalboard_pitch_shift_semitones_min: -7
  pedalboard_pitch_shift_semitones_max: 7
  pedalboard_resample: 1.0
  pedalboard_resample_target_sample_rate_min: 4000
  pedalboard_resample_target_sample_rate_max: 44100
  pedalboard_bitcrash: 1.0
  pedalboard_bitcrash_bit_depth_min: 4
  pedalboard_bitcrash_bit_depth_max: 16
  pedalboard_mp3_compressor: 1.0
  pedalboard_mp3_compressor_pedalboard_mp3_compressor_min: 0
  pedalboard_mp3_compressor_pedalboard_mp3_compressor_max: 9.999
vocals:
  pitch_shift: 1.0
  pitch_shift_min_semitones: -5
  pitch_shift_max_semitones: 5
  seven_band_parametric_eq: 1.0
  seven_band_parametric_eq_min_gain_db: -9
  seven_band_parametric_eq_max_gain_db: 9
  tanh_distortion: 1.0
  tanh_distortion_min: 0.1
  tanh_distortion_max: 0.7
  gaussian_noise: 1.0
  gaussian_noise_min_amplitude: 0.001
  gaussian_noise_max_amplitude: 0.01
  time_stretch: 1.0
  time_stretch_min_rate: 0.8
  time_stretch_max_rate: 1.25
"""


def test_msst_augmentation_section_is_known_and_every_effect_runs(tmp_path):
    pytest.importorskip("audiomentations")
    pytest.importorskip("pedalboard")
    pytest.importorskip("lameenc")
    section = yaml.safe_load(MSST_AUGMENTATIONS)
    config = load_config(with_keys(tiny_config(tmp_path / "c.yaml"), augmentations=section))
    assert config_keys.unused_keys(config) == []
    aug = Augmentations.from_config(config.augmentations, ["vocals", "other"])
    assert len(aug.effects["vocals"]) == 14 and len(aug.effects["other"]) == 9 and aug.mixture_mp3 is not None
    source = (0.3 * np.sin(np.linspace(0, 3000, 44100))[None].repeat(2, 0)).astype(np.float32)
    out = aug.stem(source, "vocals", np.random.default_rng(0))
    assert out.shape == source.shape and np.isfinite(out).all() and not np.allclose(out, source)
    assert aug.mixture(source, np.random.default_rng(0)).shape == source.shape


def test_mp3_compression_on_mixture_changes_only_the_mixture_and_repeats_per_seed_epoch_index(tmp_path):
    pytest.importorskip("audiomentations")
    pytest.importorskip("lameenc")
    data = make_tracks(tmp_path / "train", count=2)
    config = augmented_config(tmp_path, mp3_compression_on_mixture=1.0, mp3_compression_on_mixture_bitrate_min=32,
                              mp3_compression_on_mixture_bitrate_max=64, mp3_compression_on_mixture_backend="lameenc")
    config.training.target_instrument = None
    dataset = MSSTrainingDataset(config, [str(data)], 1, 8, seed=3)
    stems, mixture, _ = dataset[5]
    assert not torch.allclose(mixture, stems.sum(0), atol=1e-3)  # MP3 artefacts on the mixture
    plain = load_config(tiny_config(tmp_path / "plain.yaml"))
    plain.training.target_instrument = None
    stems_plain, mixture_plain, _ = MSSTrainingDataset(plain, [str(data)], 1, 8, seed=3)[5]
    assert torch.equal(stems, stems_plain)  # stems untouched; the generator stream is shared up to the MP3 step
    again = MSSTrainingDataset(config, [str(data)], 1, 8, seed=3)[5]
    assert torch.equal(again[1], mixture)


def test_audiomentations_and_pedalboard_effects_run_in_order_and_are_reproducible(tmp_path):
    pytest.importorskip("audiomentations")
    pytest.importorskip("pedalboard")
    section = {"enable": True, "all": {
        "pitch_shift": 1.0, "pitch_shift_min_semitones": -2, "pitch_shift_max_semitones": 2,
        "gaussian_noise": 1.0, "gaussian_noise_min_amplitude": 0.001, "gaussian_noise_max_amplitude": 0.01,
        "pedalboard_reverb": 1.0, **{f"pedalboard_reverb_{p}_{e}": v for p in
                                     ("room_size", "damping", "wet_level", "dry_level", "width")
                                     for e, v in (("min", 0.3), ("max", 0.9))},
        "pedalboard_distortion": 1.0, "pedalboard_distortion_drive_db_min": 1, "pedalboard_distortion_drive_db_max": 5,
    }}
    aug = Augmentations.from_config(section, ["vocals"])
    assert [e.key for e in aug.effects["vocals"]] == ["pitch_shift", "gaussian_noise", "pedalboard_reverb",
                                                      "pedalboard_distortion"]
    source = (0.3 * np.sin(np.linspace(0, 400, 8192))[None].repeat(2, 0)).astype(np.float32)
    state = (np.random.get_state()[1].copy(), __import__("random").getstate())
    first = aug.stem(source, "vocals", np.random.default_rng([1, 2, 3]))
    second = aug.stem(source, "vocals", np.random.default_rng([1, 2, 3]))
    other = aug.stem(source, "vocals", np.random.default_rng([1, 2, 4]))
    assert first.shape == source.shape and first.dtype == np.float32
    assert np.array_equal(first, second) and not np.allclose(first, other) and not np.allclose(first, source)
    assert np.array_equal(np.random.get_state()[1], state[0]) and __import__("random").getstate() == state[1]


def test_missing_effect_library_is_an_error_naming_the_keys_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pedalboard", None)  # import pedalboard now raises ImportError
    section = {"enable": True, "vocals": {"pedalboard_bitcrash": 0.5, "pedalboard_bitcrash_bit_depth_min": 4,
                                          "pedalboard_bitcrash_bit_depth_max": 8}}
    with pytest.raises(TrainingConfigError) as error:
        Augmentations.from_config(section, ["vocals"])
    assert "augmentations.vocals.pedalboard_bitcrash" in str(error.value)
    assert 'bsmamba2-plugin[augment]' in str(error.value)
    with pytest.raises(TrainingConfigError, match="augmentations.all.pitch_shift needs pitch_shift_min_semitones"):
        Augmentations.from_config({"enable": True, "all": {"pitch_shift": 0.5}}, ["vocals"])


def test_chunk_size_augmentation_draws_msst_range_per_batch(tmp_path):
    config = augmented_config(tmp_path, chunk_size_augm=True, chunk_size_min=1000, chunk_size_max=9000)
    augmentation = ChunkSizeAugmentation.from_config(config)
    assert (augmentation.minimum, augmentation.maximum) == (1000, 4096)  # capped at audio.chunk_size, as MSST
    lengths = [augmentation.length(0, 1, b) for b in range(200)]
    assert min(lengths) >= 1000 and max(lengths) <= 4096 and len(set(lengths)) > 100
    assert lengths == [augmentation.length(0, 1, b) for b in range(200)]
    data = make_tracks(tmp_path / "train", count=2)
    path = with_keys(tiny_config(tmp_path / "c.yaml", num_steps=2, num_epochs=1),
                     augmentations={"chunk_size_augm": True, "chunk_size_min": 1500, "chunk_size_max": 3000})
    result = run_train(["--config_path", str(path), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                        "--no_tensorboard"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chunk_size_augm: each batch cut to 1500..3000" in result.stdout


# --------------------------------------------------------------------------------- losses
LOSS_SCRIPT = r"""
import argparse, json, sys, torch
from ml_collections import ConfigDict
from msst.utils.losses import choice_loss
from bsmamba2_plugin.train.loss import MSSTLoss, MSST_LOSSES
config = ConfigDict(json.loads(sys.argv[1]))
torch.manual_seed(0)
y = torch.randn(3, 2, 2, 8192); y_pred = y + 0.3 * torch.randn_like(y); x = y.sum(1)
out = {}
for names in json.loads(sys.argv[2]):
    coefs = {f"{n}_coef": 0.25 + k for k, n in enumerate(MSST_LOSSES)}
    theirs = choice_loss(argparse.Namespace(loss=names, **coefs), config)(y_pred, y, x)
    ours = MSSTLoss(names, {n: coefs[f"{n}_coef"] for n in MSST_LOSSES}, config)(y_pred, y, x)
    out["+".join(names)] = [float(theirs), float(ours)]
print(json.dumps(out))
"""


def test_msst_losses_equal_the_msst_packages_choice_loss(tmp_path):
    pytest.importorskip("msst")
    pytest.importorskip("auraloss")
    config = {"training": {"q": 0.9, "coarse_loss_clip": True, "instruments": ["a"]},
              "audio": {"sample_rate": 44100, "chunk_size": 8192}, "model": {},
              "loss_multistft": {"fft_sizes": [512, 256], "hop_sizes": [128, 64], "win_lengths": [512, 256]}}
    names = [["masked_loss"], ["mse_loss"], ["l1_loss"], ["multistft_loss"], ["spec_masked_loss"],
             ["spec_rmse_loss"], ["masked_loss", "l1_loss", "multistft_loss"],
             # torch-l1-snr's time-domain classes never call torchaudio, so the stand-in serves
             ["l1_snr_loss"], ["l1_snr_db_loss"], ["l1_snr_loss", "l1_snr_db_loss", "l1_loss"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(STAND_IN)])}
    done = subprocess.run([sys.executable, "-c", LOSS_SCRIPT, json.dumps(config), json.dumps(names)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(values) == len(names)
    for name, (theirs, ours) in values.items():
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-7), name
    config["training"]["coarse_loss_clip"] = False  # the fine-grained masking path as well
    done = subprocess.run([sys.executable, "-c", LOSS_SCRIPT, json.dumps(config), json.dumps([["masked_loss"]])],
                          capture_output=True, text=True, env=env, timeout=300)
    (theirs, ours), = json.loads(done.stdout.strip().splitlines()[-1]).values()
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_masked_losses_need_msst_keys_and_l1_snr_runs_without_its_library(tmp_path):
    config = load_config(tiny_config(tmp_path / "c.yaml"))
    with pytest.raises(TrainingConfigError, match="need training.q"):
        MSSTLoss(["masked_loss"], {}, config)
    for name in ("l1_snr_loss", "l1_snr_db_loss", "stft_l1_snr_db_loss", "multi_l1_snr_db_loss", "log_wmse_loss"):
        loss = MSSTLoss([name], {}, config)
        torch.manual_seed(0)
        y = torch.randn(2, 1, 2, 4096)
        assert float(loss(y + 0.1 * torch.randn_like(y), y, y.sum(1))) > float(
            loss(y + 0.01 * torch.randn_like(y), y, y.sum(1))), name


def test_start_up_summary_names_the_loss_and_coefficients_apply(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    config = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1, q=0.95, coarse_loss_clip=True)
    common = ["--config_path", str(config), "--data_path", str(data), "--no_tensorboard"]
    paper = run_train([*common, "--results_path", str(tmp_path / "a")])
    assert paper.returncode == 0, paper.stderr
    assert "Loss: the paper's: 10 x L1(waveform) + 1 x multi-resolution complex STFT L1" in paper.stdout
    standard = run_train([*common, "--results_path", str(tmp_path / "b"), "--use_standard_loss"])
    assert "Loss: 1 x masked_loss (MSST's --loss)" in standard.stdout, standard.stderr
    chosen = run_train([*common, "--results_path", str(tmp_path / "c"), "--loss", "l1_loss", "mse_loss",
                        "--l1_loss_coef", "2.5"])
    assert "Loss: 2.5 x l1_loss + 1 x mse_loss (MSST's --loss)" in chosen.stdout, chosen.stderr


# ---------------------------------------------------------------------- fine-tuning flags
def test_freeze_layers_keep_those_weights_and_train_the_rest(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    config = tiny_config(tmp_path / "c.yaml", num_steps=2, num_epochs=1, ema_momentum=0)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                        "--no_tensorboard", "--freeze_layers", "band_split", "--seed", "1"])
    assert result.returncode == 0, result.stderr
    assert "Frozen layers: " in result.stdout
    from bsmamba2_plugin.model import BSMamba2

    torch.manual_seed(1)
    initial = BSMamba2.from_config(load_config(config)).state_dict()
    trained = torch.load(tmp_path / "r" / "last_bsmamba2.ckpt", weights_only=True)["model_state_dict"]
    frozen = [k for k in initial if k.startswith("band_split")]
    assert frozen and all(torch.equal(initial[k], trained[k]) for k in frozen)
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if k.startswith("mask_estimators"))
    bad = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "s"),
                     "--no_tensorboard", "--freeze_layers", "no_such_layer"])
    assert bad.returncode == 2 and "no parameter name starts with these" in bad.stderr


def test_load_only_compatible_weights_takes_what_fits(tmp_path):
    from bsmamba2_plugin.model import BSMamba2

    config = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1)
    donor = BSMamba2.from_config(load_config(config)).state_dict()
    key = next(k for k in donor if k.startswith("mask_estimators") and donor[k].dim() == 2)
    donor[key] = torch.zeros(3, 3)
    torch.save({"model_state_dict": donor}, tmp_path / "donor.ckpt")
    data = make_tracks(tmp_path / "train", count=2)
    common = ["--config_path", str(config), "--data_path", str(data), "--no_tensorboard", "--start_check_point",
              str(tmp_path / "donor.ckpt")]
    strict = run_train([*common, "--results_path", str(tmp_path / "a")])
    assert strict.returncode == 2 and "shape mismatch" in strict.stderr
    tolerant = run_train([*common, "--results_path", str(tmp_path / "b"), "--load_only_compatible_weights"])
    assert tolerant.returncode == 0, tolerant.stderr
    assert f"not loaded: {key}: checkpoint (3, 3)" in tolerant.stdout


def test_checkpoint_naming_flags_and_memory_fraction(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    valid = make_tracks(tmp_path / "valid", count=1, seconds=2.5, with_mixture=True)
    config = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=2)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
                        "--results_path", str(tmp_path / "r"), "--no_tensorboard", "--metrics", "sdr", "csdr",
                        "--save_weights_every_epoch", "--each_metrics_in_name", "--set_per_process_memory_fraction"])
    names = sorted(p.name for p in (tmp_path / "r").glob("model_*.ckpt"))
    assert result.returncode == 0, result.stderr
    assert "--set_per_process_memory_fraction has no effect on CPU" in result.stdout
    every = [n for n in names if "_sdr_" in n and "_csdr_" in n]
    assert {n.split("_ep_")[1].split("_")[0] for n in every} == {"0", "1"}
    assert any(n.startswith("model_bsmamba2_ep_0_vocals_sdr_") and "_std_0.0000" in n for n in names)


def test_wandb_offline_logs_the_run_beside_the_checkpoints(tmp_path):
    pytest.importorskip("wandb")
    data = make_tracks(tmp_path / "train", count=2)
    config = tiny_config(tmp_path / "c.yaml", num_steps=2, num_epochs=1)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                        "--no_tensorboard", "--wandb_offline"])
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    records = [p.read_bytes() for p in runs[0].glob("*.wandb")] if len(runs) == 1 else []
    assert records and b"train/loss" in records[0] and b"instruments" in records[0]  # scalars and the config


def test_linear_scheduler_warms_up_then_decays_per_optimizer_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_tracks(tmp_path / "train", count=2)
    config = tiny_config(tmp_path / "c.yaml", num_steps=3, num_epochs=2, scheduler="linear_scheduler",
                         num_warmup_steps=2, lr=0.01)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r")])
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    lrs = [round(e.value, 6) for e in events.Scalars("train/lr")]  # logged after each step
    # transformers' get_linear_schedule_with_warmup(warmup 2, total 6), after steps 1..6
    assert lrs == [0.005, 0.01, 0.0075, 0.005, 0.0025, 0.0]


def test_optimizers_that_cannot_run_here_say_why(tmp_path):
    from bsmamba2_plugin.train.optimizers import build_optimizer, build_scheduler

    parameters = [torch.nn.Parameter(torch.zeros(2))]
    for name, message in (("adamw8bit", "runs on CUDA only"), ("muon", "MSST's own Muon"),
                          ("sgd_plus", "is not supported")):
        config = load_config(tiny_config(tmp_path / f"{name}.yaml", optimizer=name))
        with pytest.raises(TrainingConfigError, match=message):
            build_optimizer(config, parameters, torch.device("cpu"))
    config = load_config(tiny_config(tmp_path / "s.yaml", scheduler="linear_scheduler"))
    with pytest.raises(TrainingConfigError, match="needs training.num_warmup_steps"):
        build_scheduler(config, torch.optim.AdamW(parameters))


@pytest.mark.parametrize("dataset_type", [2, 6])
def test_msst_dataset_types_train_through_the_msst_package(tmp_path, dataset_type):
    pytest.importorskip("msst.utils.dataset")
    import shutil

    tracks = make_tracks(tmp_path / "tracks", count=2, seconds=0.5, with_mixture=True)
    if dataset_type == 2:  # <data>/<instrument>/<any name>.wav; msst 0.1.0 globs <instrument>/**/*.wav
        data = tmp_path / "by_instrument"  # without recursive=True, so one folder level deeper
        for k, track in enumerate(sorted(tracks.iterdir())):
            for stem in ("vocals", "other"):
                (data / stem / "set").mkdir(parents=True, exist_ok=True)
                shutil.copy(track / f"{stem}.wav", data / stem / "set" / f"{k}.wav")
    else:  # type 6: type 4's layout with the real mixture.wav of each track
        data = tracks
    config = tiny_config(tmp_path / "c.yaml", num_steps=2, num_epochs=1)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                        "--no_tensorboard", "--dataset_type", str(dataset_type)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"Dataset type: {dataset_type}" in result.stdout and "Done: 2 optimizer steps" in result.stdout


def test_a_use_amp_that_is_not_true_or_false_is_refused_at_start(tmp_path):
    config = tiny_config(tmp_path / "tiny.yaml")
    with_keys(config, training={"use_amp": "no"})
    data = make_tracks(tmp_path / "train", count=2)
    run = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                     str(tmp_path / "results")])
    assert run.returncode == 2, run.stdout + run.stderr
    assert "training.use_amp='no': expected true or false" in run.stderr, run.stderr
    assert not (tmp_path / "results" / "last_bsmamba2.ckpt").exists()


def test_a_config_without_use_amp_trains_with_it_true_as_msst_does(tmp_path):
    """MSST's train.py reads a missing training.use_amp as true; so does the separator here."""
    from bsmamba2_plugin.precision import training_precision

    path = tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1)
    raw = yaml.safe_load(path.read_text())
    del raw["training"]["use_amp"]
    path.write_text(yaml.safe_dump(raw))
    data = make_tracks(tmp_path / "train", count=2)
    run = run_train(["--config_path", str(path), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                     "--no_tensorboard"])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    expected = training_precision(True, "bfloat16", "cpu").reason  # bf16 or fp32, as this CPU allows
    assert f"Training precision: {expected} (training.use_amp absent: true, as in MSST)" in run.stdout, run.stdout
