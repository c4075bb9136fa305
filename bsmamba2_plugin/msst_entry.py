"""The `bsmamba2` entry of the `msst.models` group: build BSMamba2 from an MSST config.

msst-registry calls `build_model(config)` with the YAML loaded as MSST loads it (a
ConfigDict); MSST's training and inference then use the module as any of its own models.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from .model import BSMamba2
from .settings import config_value, stem_names


def _section(config: Any, name: str) -> Mapping[str, Any] | None:
    section = config[name] if name in config else None
    if section is not None and not isinstance(section, Mapping) and not hasattr(section, "keys"):
        raise ValueError(f"{name}: expected a section (mapping), got {type(section).__name__}")
    return section


def check_stems(config: Any, model: BSMamba2) -> None:
    """MSST expects one output stem per `training.instruments` entry, or one with `training.target_instrument`."""
    if _section(config, "training") is None:
        raise ValueError("training: missing section (MSST needs training.instruments)")
    wanted, everything = stem_names(config)
    if model.num_stems != len(wanted):
        target = config_value(config["training"], "target_instrument")
        why = f"training.target_instrument={target!r}" if target else f"training.instruments has {len(everything)} entries"
        raise ValueError(f"model.num_stems={model.num_stems} but {why}: MSST expects {len(wanted)} output stem(s)")


def build_model(config: Any) -> BSMamba2:
    """Build BSMamba2 from the `model:` section; the stem count must match the `training:` section."""
    if _section(config, "model") is None:
        raise ValueError("model: missing section (BSMamba2's keywords, e.g. dim, depth, num_stems)")
    model = BSMamba2.from_config(config)
    check_stems(config, model)
    if config_value(config["training"], "compile"):
        warnings.warn("training.compile is read by `python -m bsmamba2_plugin.train` only; MSST's scripts run the "
                      "model eagerly", stacklevel=2)
    return model
