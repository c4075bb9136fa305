"""Files in the exact layouts of the two released BSMamba2 weight sets, generated here (no network).

- MSST's release: `config_bs_mamba2_vocals.yaml` (MSST's configs/, key for key and value for
  value: no training.model_type, `!!python/tuple` window sizes, transformer-only keys) and
  `bs_mamba2_vocals.ckpt` (a state dict of MSST's BSMamba2Model names; MSST's train.py dict too).
- The official code's run folder (github EuiYeonKim/BSMamba2): `tb_logs/hparams.yaml`, the
  whole Hydra config of src/conf/ resolved, as Lightning's save_hyperparameters writes it with
  OmegaConf, and `weights/*.ckpt`, a Lightning checkpoint: `state_dict` with the `model.` prefix
  in the official BSModel's module order plus the featurizers' windows, `optimizer_states[0]`
  of its EMAOptimizer (`opt`, `ema` tuple, `current_step`, `decay`, `every_n_steps`), and
  `hyper_parameters` as an OmegaConf DictConfig.

The weights are random; `tiny=True` shrinks the model (and only the model) so tests run fast.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml

# The tiny model: same layout, small sizes (n_fft 256 -> 129 bins in 3 bands).
TINY_MODEL = {"dim": 16, "depth": 1, "stft_n_fft": 256, "stft_hop_length": 64, "stft_win_length": 256,
              "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1}
TINY_CHUNK = 4096


class PythonTuple(tuple):
    """Dumped as `!!python/tuple`, as MSST's YAML writes the window sizes and mixup probabilities."""


yaml.add_representer(PythonTuple, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:python/tuple",
                                                                                 list(data)), Dumper=yaml.Dumper)


def msst_bs_mamba2_vocals(tiny: bool = False) -> dict[str, Any]:
    """MSST's configs/config_bs_mamba2_vocals.yaml (MSST main, ccc011a) as data."""
    config: dict[str, Any] = {
        "audio": {"chunk_size": 352800, "dim_f": 1024, "dim_t": 801, "hop_length": 441, "n_fft": 2048,
                  "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.0},
        "model": {"dim": 256, "depth": 6, "stereo": True, "time_module_depth": 1, "freq_module_depth": 1,
                  "mask_estimator_depth": 2, "module_type": "mamba2", "dim_head": 48, "heads": 8,
                  "ff_dropout": 0.1, "attn_dropout": 0.1, "flash_attn": True, "mamba_gmlp": False,
                  "num_stems": 1, "stft_n_fft": 2048, "stft_hop_length": 441, "stft_win_length": 2048,
                  "stft_normalized": False, "multi_stft_resolution_loss_weight": 1.0,
                  "multi_stft_resolutions_window_sizes": PythonTuple((4096, 2048, 1024, 512, 256)),
                  "multi_stft_hop_size": 147, "multi_stft_normalized": False},
        "training": {"batch_size": 6, "gradient_accumulation_steps": 1, "grad_clip": 0,
                     "instruments": ["vocals", "other"], "patience": 2, "reduce_factor": 0.95,
                     "target_instrument": "vocals", "num_epochs": 1000, "num_steps": 1000, "q": 0.95,
                     "coarse_loss_clip": True, "ema_momentum": 0.999, "optimizer": "adam", "lr": 1.0e-5,
                     "other_fix": True, "use_amp": True},
        "augmentations": {
            "enable": True, "loudness": True, "loudness_min": 0.5, "loudness_max": 1.5, "mixup": True,
            "mixup_probs": PythonTuple((0.2, 0.02, 0.002)), "mixup_loudness_min": 0.5, "mixup_loudness_max": 1.5,
            "all": {"channel_shuffle": 0.5, "random_inverse": 0.1, "random_polarity": 0.5},
            "vocals": {"pitch_shift": 0.01, "pitch_shift_min_semitones": -5, "pitch_shift_max_semitones": 5,
                       "seven_band_parametric_eq": 0.01, "seven_band_parametric_eq_min_gain_db": -9,
                       "seven_band_parametric_eq_max_gain_db": 9, "tanh_distortion": 0.01,
                       "tanh_distortion_min": 0.1, "tanh_distortion_max": 0.7},
            "other": {"pitch_shift": 0.01, "pitch_shift_min_semitones": -4, "pitch_shift_max_semitones": 4,
                      "gaussian_noise": 0.01, "gaussian_noise_min_amplitude": 0.001,
                      "gaussian_noise_max_amplitude": 0.015, "time_stretch": 0.01, "time_stretch_min_rate": 0.8,
                      "time_stretch_max_rate": 1.25},
        },
        "inference": {"chunk_size": 352800, "batch_size": 4, "dim_t": 1101, "num_overlap": 2, "normalize": False},
    }
    if tiny:
        config["model"].update(TINY_MODEL)
        config["model"]["multi_stft_resolutions_window_sizes"] = PythonTuple((512, 256))
        config["model"]["multi_stft_hop_size"] = 128
        config["audio"]["chunk_size"] = config["inference"]["chunk_size"] = TINY_CHUNK
        config["training"].update(batch_size=2, num_steps=2, num_epochs=1, lr=1e-3)
        config["inference"]["batch_size"] = 2
    return config


def write_msst_config(path: Path, tiny: bool = False, **training: Any) -> Path:
    config = msst_bs_mamba2_vocals(tiny)
    config["training"].update(training)
    path.write_text(yaml.dump(config, Dumper=yaml.Dumper, sort_keys=False), encoding="utf-8")
    return path


def official_hparams(tiny: bool = False) -> dict[str, Any]:
    """The official src/conf/ config resolved (defaults merged, interpolations filled in)."""
    data = "/data/musdb18hq"
    hparams: dict[str, Any] = {
        "model": {"dim": 256, "depth": 6, "stereo": True, "mask_estimator_depth": 2, "module_type": "mamba2",
                  "dim_head": 48, "heads": 8, "ff_dropout": 0.1, "attn_dropout": 0.1, "flash_attn": False,
                  "mamba_gmlp": False},
        "train_dataset": {"_target_": "data.MixingDataset", "file_dir": data,
                          "txt_dir": "/data/BandSplitRNN-PyTorch/filelist/8seconds/mus18hq", "is_training": True,
                          "instruments": ["vocals", "other", "bass", "drums"], "target": ["vocals"],
                          "num_steps": 6000, "batch_size": 5, "silent_prob": 0.1,
                          "augmentation": {"loudness": {"loudness_min": 0.5, "loudness_max": 1.5}}},
        "val_dataset": {"_target_": "data.MixingDataset", "file_dir": data,
                        "txt_dir": "/data/BandSplitRNN-PyTorch/filelist/8seconds/mus18hq", "is_training": False,
                        "instruments": ["vocals", "other", "bass", "drums"], "target": ["vocals"],
                        "num_steps": 1200, "batch_size": 5},
        "test_dataset": {"in_fp": data, "target": ["vocals"], "is_mono": False, "sr": 44100, "win_size": 8,
                         "hop_size": 8, "batch_size": 8, "window": None},
        "sad": {"sr": 44100, "window_size_in_sec": 8, "overlap_ratio": 0.5, "n_chunks_per_segment": 10,
                "eps": 1e-5, "gamma": 1e-3, "threshold_max_quantile": 0.15, "threshold_segment": 0.5},
        "augmentations": {},
        "featurizer": {
            "direct_transform": {"_target_": "torchaudio.transforms.Spectrogram", "n_fft": 2048, "win_length": 2048,
                                 "hop_length": 441, "power": None},
            "inverse_transform": {"_target_": "torchaudio.transforms.InverseSpectrogram", "n_fft": 2048,
                                  "win_length": 2048, "hop_length": 441},
            "multi_transform": {"_target_": "torchaudio.transforms.Spectrogram", "hop_length": 147, "power": None},
            "multi_n_fft": 2048, "multi_win_length": [4096, 2048, 1024, 512, 256]},
        "callbacks": {
            "lr_monitor": {"_target_": "pytorch_lightning.callbacks.LearningRateMonitor", "logging_interval": "epoch"},
            "model_ckpt": {"_target_": "pytorch_lightning.callbacks.ModelCheckpoint", "monitor": "val/loss",
                           "mode": "min", "save_top_k": 4, "dirpath": "logs/test/vocals/2025-03-01_10-00/weights",
                           "filename": "epoch{epoch:02d}-val_loss{val/loss:.2f}", "auto_insert_metric_name": False,
                           "save_last": True},
            "model_ckpt_usdr": {"_target_": "pytorch_lightning.callbacks.ModelCheckpoint", "monitor": "val/usdr",
                                "mode": "max", "save_top_k": 4, "dirpath": "logs/test/vocals/2025-03-01_10-00/weights",
                                "filename": "epoch{epoch:02d}-val_usdr{val/usdr:.2f}",
                                "auto_insert_metric_name": False},
            "ema": {"_target_": "utils.callbacks.EMA", "decay": 0.999, "validate_original_weights": False,
                    "every_n_steps": 1}},
        "train_loader": {"batch_size": 5, "num_workers": 16, "shuffle": True, "drop_last": True},
        "val_loader": {"batch_size": 5, "num_workers": 16, "shuffle": False, "drop_last": False},
        "opt": {"_target_": "torch.optim.AdamW", "lr": 0.0005},
        "ckpt_path": None,
        "logger": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger",
                   "save_dir": "logs/test/vocals/2025-03-01_10-00/tb_logs", "name": "", "version": "",
                   "default_hp_metric": False},
        "trainer": {"_target_": "pytorch_lightning.trainer.Trainer", "fast_dev_run": False, "max_epochs": 2000,
                    "check_val_every_n_epoch": 1, "num_sanity_val_steps": 0, "log_every_n_steps": 100,
                    "accelerator": "gpu", "devices": "0, 1",
                    "strategy": {"_target_": "pytorch_lightning.strategies.ddp.DDPStrategy",
                                 "find_unused_parameters": True},
                    "gradient_clip_val": 3, "accumulate_grad_batches": 6, "precision": "bf16",
                    "enable_progress_bar": True, "benchmark": True, "deterministic": False},
        "experiment_dirname": "test",
        "model_type": "bandsplitmodel",
        "complex_error": False, "phase_loss": False, "mag_loss": False, "time_loss": True,
        "multi_stft_loss": True, "consistency": False,
    }
    if tiny:
        hparams["model"].update(dim=16, depth=1, mask_estimator_depth=1, freqs_per_bands=[32, 32, 65])
        for key in ("direct_transform", "inverse_transform"):
            hparams["featurizer"][key].update(n_fft=256, win_length=256, hop_length=64)
        hparams["featurizer"].update(multi_n_fft=256, multi_win_length=[512, 256])
        hparams["featurizer"]["multi_transform"]["hop_length"] = 128
        hparams["sad"]["window_size_in_sec"] = TINY_CHUNK / 44100
        hparams["test_dataset"].update(win_size=TINY_CHUNK / 44100, hop_size=TINY_CHUNK / 44100, batch_size=2)
        hparams["train_loader"]["batch_size"] = 2
        hparams["train_dataset"]["num_steps"] = 4
        hparams["trainer"].update(max_epochs=1, accumulate_grad_batches=1)
        hparams["opt"]["lr"] = 1e-3
    return hparams


# The official BSModel registers its modules in this order (src/model/bs_model.py).
OFFICIAL_MODULE_ORDER = ("layers.", "final_norm.", "band_split.", "mask_estimators.")


def official_order(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: weights[k] for prefix in OFFICIAL_MODULE_ORDER for k in weights if k.startswith(prefix)}


def write_official_run(folder: Path, weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None = None,
                       names: tuple[str, ...] = ("epoch117-val_usdr10.41.ckpt",), tiny: bool = True,
                       hparams: dict[str, Any] | None = None) -> Path:
    """An official run folder: tb_logs/hparams.yaml and weights/<names>, Lightning checkpoints."""
    from omegaconf import OmegaConf

    hparams = copy.deepcopy(hparams if hparams is not None else official_hparams(tiny))
    (folder / "tb_logs").mkdir(parents=True, exist_ok=True)
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    config = OmegaConf.create(hparams)
    OmegaConf.save(config, folder / "tb_logs" / "hparams.yaml")
    ordered = official_order(weights)
    n_fft = hparams["featurizer"]["direct_transform"]["n_fft"]
    state_dict = {f"model.{k}": v for k, v in ordered.items()}
    state_dict.update({"featurizer.window": torch.hann_window(n_fft), "inverse_featurizer.window": torch.hann_window(n_fft)})
    for i, window in enumerate(hparams["featurizer"]["multi_win_length"]):
        state_dict[f"multi_featurizer.{i}.window"] = torch.hann_window(window)
    adam_state = {"state": {i: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(v),
                                "exp_avg_sq": torch.zeros_like(v)} for i, v in enumerate(ordered.values())},
                  "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                                    "amsgrad": False, "params": list(range(len(ordered)))}]}
    optimizer_state: dict[str, Any] = adam_state
    if ema is not None:
        optimizer_state = {"opt": adam_state, "ema": tuple(official_order(ema).values()), "current_step": 1000,
                           "decay": 0.999, "every_n_steps": 1}
    checkpoint = {
        "epoch": 117, "global_step": 1000, "pytorch-lightning_version": "2.1.3", "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 117}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/usdr', 'mode': 'max'}": {"best_model_score": torch.tensor(10.41)}},
        "optimizer_states": [optimizer_state], "lr_schedulers": [],
        "hparams_name": "hparams", "hyper_parameters": config,
    }
    for name in names:
        torch.save(checkpoint, folder / "weights" / name)
    return folder


def msst_training_dict(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What MSST's train.py save_weights writes (model_state_dict = the trained model, not EMA)."""
    return {"epoch": 42, "optimizer_name": "Adam", "optimizer_state_dict": {"state": {}, "param_groups": []},
            "scheduler_state_dict": None, "best_metric": 8.82, "all_metrics": {}, "all_losses": [],
            "model_state_dict": weights}
