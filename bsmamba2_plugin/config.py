"""Configs: MSST YAML (read as MSST reads it) and the official code's run folder (Hydra `hparams.yaml`).

Every command reads its config through `load_config`, so both released weight sets work with
the same commands:

- an MSST YAML (`configs/config_bs_mamba2_vocals.yaml` of MSST's release, or ours): PyYAML
  FullLoader into an ml_collections ConfigDict, `!!python/tuple` included;
- the official code's `hparams.yaml` (the whole Hydra config, saved by Lightning's
  `save_hyperparameters` under `<run>/tb_logs/`), or the run folder itself: converted to the
  MSST layout on the fly (`config_from_official_hparams`), nobody writes a YAML by hand.

Which model types a config may name is decided here too (`resolve_model_type`).
"""
from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ml_collections import ConfigDict
from msst_registry.errors import ConfigFileError
from msst_registry.loading import load_msst_config

MODEL_TYPE = "bsmamba2"
# MSST's built-in name of the same architecture (models/bs_mamba2_code, CUDA only): its configs and
# weights are ours unchanged, so a config naming it is built here as bsmamba2.
MSST_BUILTIN_NAME = "bs_mamba2"
ACCEPTED_MODEL_TYPES = (MODEL_TYPE, MSST_BUILTIN_NAME)

OFFICIAL_MODEL_TYPE = "bandsplitmodel"  # the official code's `model_type` (src/conf/config.yaml)
HPARAMS_NAME = "hparams.yaml"

# The official config's keys that say nothing about the model or how to train it here: data
# locations and loader workers (our commands take --data_path), Lightning / Hydra run settings.
OFFICIAL_KEYS_NOT_NEEDED = frozenset({
    "defaults", "train_loader", "val_loader", "val_dataset", "test_dataset", "ckpt_path", "logger",
    "trainer", "experiment_dirname", "hydra", "callbacks", "augmentations", "sad", "featurizer",
    "train_dataset", "opt", "model", "model_type", "sch",
    "complex_error", "phase_loss", "mag_loss", "time_loss", "multi_stft_loss", "consistency",
})
# The paper's loss in the official code's switches: time-domain L1 plus the multi-resolution STFT L1.
OFFICIAL_PAPER_LOSS = {"complex_error": False, "phase_loss": False, "mag_loss": False,
                       "time_loss": True, "multi_stft_loss": True, "consistency": False}


class ConfigError(ValueError):
    """A config file that cannot be read or lacks what is needed."""


def load_config(path: str | os.PathLike[str]) -> ConfigDict:
    """Load an MSST config, an official `hparams.yaml`, or an official run folder (its hparams.yaml).

    Needs a `model` section (an official hparams.yaml always has one).
    """
    path = Path(path)
    if path.is_dir():
        path = find_official_hparams(path)
    try:
        config = load_msst_config(path)
    except FileNotFoundError as error:
        raise ConfigError(f"config {path} does not exist") from error
    except ConfigFileError as error:
        raise ConfigError(str(error)) from error
    if is_official_hparams(config):
        return config_from_official_hparams(config.to_dict(), origin=str(path))
    if not isinstance(config.get("model"), ConfigDict):
        raise ConfigError(f"config {path} has no 'model' section (a mapping of BSMamba2's keywords)")
    return config


def find_official_hparams(folder: str | os.PathLike[str]) -> Path:
    """`<run>/tb_logs/**/hparams.yaml` of an official run folder (also `<run>/hparams.yaml`)."""
    folder = Path(folder)
    found = sorted(folder.glob(HPARAMS_NAME)) or sorted(folder.glob(f"tb_logs/**/{HPARAMS_NAME}"))
    if not found:
        raise ConfigError(
            f"{folder} is a folder without tb_logs/.../{HPARAMS_NAME}: expected an official BSMamba2 run folder "
            f"(tb_logs/hparams.yaml and weights/*.ckpt) or give the config file itself"
        )
    if len(found) > 1:
        raise ConfigError(
            f"{folder} holds {len(found)} {HPARAMS_NAME} files ({', '.join(str(p) for p in found)}); pass one of them"
        )
    return found[0]


def is_official_hparams(config: Mapping[str, Any]) -> bool:
    """The official code's Hydra config: a top-level `model_type` and its featurizer / dataset sections."""
    return "model_type" in config and ("featurizer" in config or "train_dataset" in config)


def resolve_model_type(config: Mapping[str, Any], cli_model_type: str | None = None,
                       origin: str = "the config") -> str:
    """The model type a command builds, by MSST's rule (`training.model_type` beats `--model_type`).

    Absent (MSST's own bs_mamba2 YAML has none), `bsmamba2` or MSST's built-in name `bs_mamba2`
    (same architecture, same weights): BSMamba2, returned as "bsmamba2". Anything else is an
    error naming it: the config describes another architecture.
    """
    training = config["training"] if "training" in config else None
    if training is not None and "model_type" in training:
        chosen, where = training["model_type"], "training.model_type"
    elif cli_model_type:
        chosen, where = cli_model_type, "--model_type"
    else:
        return MODEL_TYPE
    if chosen not in ACCEPTED_MODEL_TYPES:
        raise ConfigError(
            f"{origin}: {where} is {chosen!r}; this package runs BSMamba2 only, named {MODEL_TYPE!r} "
            f"(or MSST's {MSST_BUILTIN_NAME!r}). For another model use MSST's own scripts"
        )
    return MODEL_TYPE


# --- the official code's hparams.yaml -------------------------------------------------------

_INTERPOLATION = re.compile(r"^\$\{(\.*)([A-Za-z_][\w.]*)\}$")


def _lookup(data: Mapping[str, Any], dotted: str, origin: str, default: Any = ...) -> Any:
    """`a.b.c` of the official config; resolves `${x.y}` and `${..x}` references (Lightning normally
    saves them resolved) and refuses other interpolations by name."""
    node: Any = data
    parents: list[Any] = []
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not ...:
                return default
            raise ConfigError(f"{origin}: the official config has no {dotted}, which is needed")
        parents.append(node)
        node = node[part]
    if isinstance(node, str) and node.startswith("${"):
        match = _INTERPOLATION.match(node)
        if not match:
            raise ConfigError(f"{origin}: {dotted} is the unresolved interpolation {node!r}; write its value there")
        dots, target = match.groups()
        if not dots:
            return _lookup(data, target, origin, default)
        base = parents[-len(dots)] if len(dots) <= len(parents) else None
        if base is None:
            raise ConfigError(f"{origin}: {dotted} = {node!r} points above the top of the config")
        return _lookup(base, target, origin, default)
    return node


def _shipped_paper_config() -> ConfigDict:
    from .shipped_configs import shipped_config

    return load_msst_config(shipped_config("bsmamba2_vocals_paper.yaml"))


def _say(origin: str, message: str) -> None:
    warnings.warn(f"{origin}: {message}", UserWarning, stacklevel=3)


def config_from_official_hparams(data: Mapping[str, Any], origin: str = "hparams.yaml") -> ConfigDict:
    """The MSST config equivalent to an official run's Hydra config.

    Model: the official `model:` section (same keywords as MSST's bs_mamba2), the STFT and loss
    resolutions from `featurizer`, one stem per `train_dataset.target`. Training: the shipped
    paper recipe (`configs/bsmamba2_vocals_paper.yaml`) with every value the run sets taken from
    it (batch, accumulation, clip, optimizer, lr, epochs, EMA, precision, silence probability,
    loudness, activity detector). Inference: `test_dataset` chunks, MSST's overlap-add.
    """
    model_type = _lookup(data, "model_type", origin)
    if model_type != OFFICIAL_MODEL_TYPE:
        raise ConfigError(f"{origin}: model_type is {model_type!r}; the official code builds {OFFICIAL_MODEL_TYPE!r}")
    model = dict(_lookup(data, "model", origin))
    module_type = model.get("module_type", "transformer")  # BSModel's default
    if module_type != "mamba2":
        what = {"transformer": "the official code's BS-RoFormer baseline (bsroformer)",
                "mamba": "the official code's Mamba-1 variant"}.get(module_type, f"module_type {module_type!r}")
        raise ConfigError(
            f"{origin}: model.module_type is {module_type!r}, i.e. {what}, not BSMamba2 (module_type 'mamba2'); "
            f"this package runs BSMamba2 only"
        )
    targets = [str(t) for t in _lookup(data, "train_dataset.target", origin)]
    if not targets:
        raise ConfigError(f"{origin}: train_dataset.target is empty; expected the separated stems, e.g. [vocals]")
    instruments = [str(i) for i in _lookup(data, "train_dataset.instruments", origin, default=targets)]

    direct = _lookup(data, "featurizer.direct_transform", origin)
    n_fft = int(direct["n_fft"])
    stft = dict(stft_n_fft=n_fft, stft_hop_length=int(direct.get("hop_length", n_fft // 2)),
                stft_win_length=int(direct.get("win_length", n_fft)),
                stft_normalized=bool(direct.get("normalized", False)))
    inverse = _lookup(data, "featurizer.inverse_transform", origin, default={})
    for key, ours in (("n_fft", "stft_n_fft"), ("hop_length", "stft_hop_length"), ("win_length", "stft_win_length")):
        if key in inverse and int(inverse[key]) != stft[ours]:
            raise ConfigError(f"{origin}: featurizer.inverse_transform.{key}={inverse[key]} differs from the direct "
                              f"transform's {stft[ours]}; BSMamba2 uses one STFT both ways")
    windows = _lookup(data, "featurizer.multi_win_length", origin, default=None)
    if windows is not None:
        stft["multi_stft_resolutions_window_sizes"] = tuple(int(w) for w in windows)
    multi_hop = _lookup(data, "featurizer.multi_transform.hop_length", origin, default=None)
    if multi_hop is not None:
        stft["multi_stft_hop_size"] = int(multi_hop)
    multi_n_fft = _lookup(data, "featurizer.multi_n_fft", origin, default=n_fft)
    if int(multi_n_fft) != n_fft:
        _say(origin, f"featurizer.multi_n_fft={multi_n_fft} is not used: the loss's smallest n_fft is "
                     f"stft_n_fft={n_fft} here")
    config = _shipped_paper_config().to_dict()  # plain dicts: ConfigDict refuses to change a value's type
    if "freqs_per_bands" in model:  # a tuple, as MSST's own bs_mamba2 class is typed
        model["freqs_per_bands"] = tuple(int(f) for f in model["freqs_per_bands"])
    config["model"] = {**model, **stft, "num_stems": len(targets)}

    training = config["training"]
    training["model_type"] = MODEL_TYPE
    if len(targets) == 1:
        training["instruments"] = instruments if targets[0] in instruments else [targets[0], *instruments]
        training["target_instrument"] = targets[0]
    else:  # one output per target, in this order
        training["instruments"] = targets
        training["target_instrument"] = None
        extra = [i for i in instruments if i not in targets]
        if extra:
            _say(origin, f"train_dataset.instruments {extra} are mixed in by the official code but are not "
                         f"model outputs; training.instruments here lists the outputs {targets}")
    batch = int(_lookup(data, "train_loader.batch_size", origin, default=training["batch_size"]))
    training["batch_size"] = batch
    training["gradient_accumulation_steps"] = int(_lookup(data, "trainer.accumulate_grad_batches", origin,
                                                          default=training["gradient_accumulation_steps"]))
    training["grad_clip"] = float(_lookup(data, "trainer.gradient_clip_val", origin,
                                          default=training["grad_clip"]) or 0)
    training["num_epochs"] = int(_lookup(data, "trainer.max_epochs", origin, default=training["num_epochs"]))
    # The official num_steps counts examples per epoch; MSST's counts batches.
    examples = int(_lookup(data, "train_dataset.num_steps", origin, default=training["num_steps"] * batch))
    training["num_steps"] = max(1, examples // batch)
    precision = str(_lookup(data, "trainer.precision", origin, default="bf16"))
    training["use_amp"] = precision not in ("32", "32-true", "64", "64-true")
    training["amp_dtype"] = "float16" if precision.startswith("16") else "bfloat16"
    ema = _lookup(data, "callbacks.ema", origin, default=None)
    training["ema_momentum"] = float(ema["decay"]) if isinstance(ema, Mapping) and "decay" in ema else 0.0
    training["silent_stem_prob"] = float(_lookup(data, "train_dataset.silent_prob", origin, default=0.0))

    opt = dict(_lookup(data, "opt", origin, default={}))
    target = str(opt.pop("_target_", "torch.optim.AdamW")).rsplit(".", 1)[-1].lower()
    if target not in ("adamw", "adam", "sgd", "rmsprop", "radam"):
        raise ConfigError(f"{origin}: opt._target_ {target!r} has no equivalent here (adamw, adam, sgd, rmsprop, radam)")
    training["optimizer"] = target
    training["lr"] = float(opt.pop("lr", training["lr"]))
    if opt:
        config["optimizer"] = opt  # the optimizer's other keywords, as MSST's `optimizer:` section
    if "sch" in data:
        _say(origin, "sch (a learning-rate scheduler) is not used: training here keeps MSST's "
                     "ReduceLROnPlateau with the paper's constant rate")

    loudness = _lookup(data, "train_dataset.augmentation.loudness", origin, default=None)
    config["augmentations"]["loudness"] = isinstance(loudness, Mapping)
    if isinstance(loudness, Mapping):
        config["augmentations"]["loudness_min"] = float(loudness.get("loudness_min", 0.5))
        config["augmentations"]["loudness_max"] = float(loudness.get("loudness_max", 1.5))

    sample_rate = int(_lookup(data, "sad.sr", origin, default=_lookup(data, "test_dataset.sr", origin, default=44100)))
    window_seconds = float(_lookup(data, "sad.window_size_in_sec", origin, default=8))
    config["audio"]["sample_rate"] = sample_rate
    config["audio"]["chunk_size"] = int(round(window_seconds * sample_rate))
    config["audio"]["n_fft"] = n_fft
    config["audio"]["hop_length"] = stft["stft_hop_length"]
    config["audio"]["dim_t"] = config["audio"]["chunk_size"] // stft["stft_hop_length"] + 1  # informational
    config["audio"]["num_channels"] = 2 if model.get("stereo", False) else 1
    sad = _lookup(data, "sad", origin, default=None)
    if isinstance(sad, Mapping):
        check = training["activity_check"]
        check["sub_chunks"] = int(sad.get("n_chunks_per_segment", check["sub_chunks"]))
        check["rms_floor"] = float(sad.get("gamma", check["rms_floor"]))
        check["quantile"] = float(sad.get("threshold_max_quantile", check["quantile"]))
        check["min_active_fraction"] = float(sad.get("threshold_segment", check["min_active_fraction"]))

    test_rate = int(_lookup(data, "test_dataset.sr", origin, default=sample_rate))
    if test_rate != sample_rate:
        raise ConfigError(f"{origin}: test_dataset.sr={test_rate} differs from sad.sr={sample_rate}")
    win = float(_lookup(data, "test_dataset.win_size", origin, default=window_seconds))
    hop = float(_lookup(data, "test_dataset.hop_size", origin, default=win / 2))
    config["inference"]["chunk_size"] = int(round(win * sample_rate))
    config["inference"]["batch_size"] = int(_lookup(data, "test_dataset.batch_size", origin,
                                                    default=config["inference"]["batch_size"]))
    ratio = win / hop if hop > 0 else 0
    if ratio >= 2 and ratio == int(ratio):
        config["inference"]["num_overlap"] = int(ratio)
    else:
        # The official evaluate.py cuts non-overlapping chunks (hop = win); MSST's linear-fade
        # overlap-add needs overlapping chunks to hide the borders, so 2 is used (as in our configs).
        config["inference"]["num_overlap"] = 2
        _say(origin, f"test_dataset.hop_size={hop:g} s with win_size={win:g} s is taken as inference.num_overlap 2 "
                     f"(MSST's overlap-add, chunks every {win / 2:g} s); export the config (python -m "
                     f"bsmamba2_plugin.export_weights --write_config) to change it")

    loss = {key: bool(data[key]) for key in OFFICIAL_PAPER_LOSS if key in data}
    different = {key: value for key, value in loss.items() if value != OFFICIAL_PAPER_LOSS[key]}
    if different:
        _say(origin, f"loss switches {different} differ from the paper's; bsmamba2_plugin.train trains the paper's "
                     f"loss (time L1 + multi-resolution STFT L1)")
    unknown = sorted(set(data) - OFFICIAL_KEYS_NOT_NEEDED)
    if unknown:
        _say(origin, f"key(s) {', '.join(unknown)} of the official config are not used here")
    return ConfigDict(config)


def config_to_yaml(config: Mapping[str, Any] | ConfigDict) -> str:
    """An MSST YAML of `config` (tuples stay `!!python/tuple`, as MSST's own configs write them)."""
    plain = config.to_dict() if isinstance(config, ConfigDict) else copy.deepcopy(dict(config))
    return yaml.dump(plain, Dumper=yaml.Dumper, sort_keys=False, default_flow_style=False)
