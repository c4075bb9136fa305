"""MSST YAML configs: read them the way MSST does (ml_collections ConfigDict)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from ml_collections import ConfigDict


class ConfigError(ValueError):
    """A config file that cannot be read or lacks what is needed."""


def load_config(path: str | os.PathLike[str]) -> ConfigDict:
    """Load an MSST config. FullLoader as in MSST, so `!!python/tuple` works."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=yaml.FullLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    if "model" not in data or not isinstance(data["model"], dict):
        raise ConfigError(f"config {path} has no 'model' section (a mapping of BSMamba2's keywords)")
    return ConfigDict(data)
