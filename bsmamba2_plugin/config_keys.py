"""Every config key the trainer, the separator and the model read or knowingly accept, in one table.

`warn_unused_keys(config, source)` warns once per key (per process) that is in none of these
lists, naming its dotted path (``augmentations.mp3_compression_on_mixture``) and the file, so no
key is ever ignored without a word (the free-form sections' keys, the model's among them, are refused
by what they are passed to). Keys that MSST reads for its other models and that have no
meaning for BSMamba2 are listed under `NO_EFFECT` with the reason; they warn only when set to a
value that would change MSST's behaviour (so a shipped MSST config stays quiet).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from bsmamba2_plugin.train.augmentations import TOP_LEVEL_KEYS as AUGMENTATION_KEYS
from bsmamba2_plugin.train.augmentations import per_stem_keys

# section -> keys read by bsmamba2_plugin (training, separation, the model)
READ: dict[str, frozenset[str]] = {
    "audio": frozenset({"chunk_size", "num_channels", "sample_rate", "min_mean_abs"}),
    "training": frozenset({
        "model_type", "instruments", "target_instrument", "batch_size", "num_steps", "num_epochs", "lr",
        "gradient_accumulation_steps", "grad_clip", "normalize", "use_amp", "amp_dtype", "compile", "optimizer",
        "scheduler", "patience", "reduce_factor", "num_warmup_steps", "ema_momentum", "silent_stem_prob",
        "waveform_loss_weight", "activity_check", "q", "coarse_loss_clip", "bypass_filter",
        # read by MSST's dataset code, which the trainer uses for dataset types 2, 3, 5, 6, 7
        "precompute_chunks", "num_precompute_chunks", "precompute_batch_for_chunks", "read_metadata_procs",
        "max_class_presence_ratio",
    }),
    "inference": frozenset({"batch_size", "num_overlap", "chunk_size", "normalize", "precision"}),
    "augmentations": AUGMENTATION_KEYS,
    "optimizer": frozenset(),      # free-form: passed to the optimizer's constructor, which refuses unknown names
    "loss_multistft": frozenset(),  # free-form: passed to auraloss.freq.MultiResolutionSTFTLoss
    "lora": frozenset(),            # free-form: passed to loralib.Linear / peft.LoraConfig
    "model": frozenset(),           # passed to BSMamba2, which refuses an unknown key with the list of its own
}
FREE_FORM = frozenset({"optimizer", "loss_multistft", "lora", "model"})

# dotted path -> (the value that means "off", why it has no effect here)
NO_EFFECT: dict[str, tuple[Any, str]] = {
    "audio.n_fft": (None, "MSST's STFT for its other models; BSMamba2 uses model.stft_n_fft"),
    "audio.hop_length": (None, "MSST's STFT for its other models; BSMamba2 uses model.stft_hop_length"),
    "audio.dim_f": (None, "MSST's spectrogram height for its other models"),
    "audio.dim_t": (None, "MSST's spectrogram width for its other models; audio.chunk_size sets the length"),
    "inference.dim_t": (None, "MSST's older chunk length in frames; inference.chunk_size / audio.chunk_size wins"),
    "training.other_fix": (False, "MSST's multisong validation switch (other = instrumental) is not implemented"),
    "training.segment": (None, "htdemucs's segment length"),
    "training.samplerate": (None, "htdemucs's sample rate; audio.sample_rate is read"),
    "training.shift": (None, "htdemucs's random shift"),
    "training.channels": (None, "htdemucs's channel count"),
}

_warned: set[tuple[str, str]] = set()


def _keys(section: Any) -> list[str]:
    if isinstance(section, Mapping):
        return [str(k) for k in section.keys()]
    if hasattr(section, "keys"):
        return [str(k) for k in section.keys()]
    return []


def _is_section(value: Any) -> bool:
    return isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "items"))


def unused_keys(config: Any) -> list[tuple[str, str]]:
    """(dotted path, reason) for every key bsmamba2_plugin neither reads nor knowingly accepts."""
    found: list[tuple[str, str]] = []
    instruments = []
    training = config["training"] if "training" in config else {}
    if _is_section(training) and "instruments" in training:
        instruments = [str(i) for i in (training["instruments"] or [])]
    for name in _keys(config):
        section = config[name]
        if name not in READ:
            found.append((name, "unknown section"))
            continue
        if name in FREE_FORM or not _is_section(section):
            continue
        for key in _keys(section):
            path = f"{name}.{key}"
            value = section[key]
            if path in NO_EFFECT:
                off, reason = NO_EFFECT[path]
                if off is not None and value != off:
                    found.append((path, f"has no effect in bsmamba2_plugin: {reason}"))
                continue
            if name == "augmentations" and (key == "all" or key in instruments) and _is_section(value):
                allowed = per_stem_keys()
                found.extend((f"{path}.{k}", "not an MSST augmentation key") for k in _keys(value)
                             if k not in allowed)
                continue
            if name == "training" and key == "activity_check":
                continue  # its own class refuses unknown keys
            if key not in READ[name]:
                hint = " (an instrument section? it is not in training.instruments)" if (
                    name == "augmentations" and _is_section(value)) else ""
                found.append((path, f"not read by bsmamba2_plugin{hint}"))
    return found


def warn_unused_keys(config: Any, source: str) -> list[str]:
    """Warn once per process for each unused key of `config` (read from `source`); returns their paths."""
    paths = []
    for path, reason in unused_keys(config):
        paths.append(path)
        if (source, path) in _warned:
            continue
        _warned.add((source, path))
        warnings.warn(f"{source}: config key {path} is ignored ({reason})", UserWarning, stacklevel=2)
    return paths
