"""MSST YAML configs, read the way MSST does (PyYAML FullLoader into an ml_collections ConfigDict)."""
from __future__ import annotations

import os

from ml_collections import ConfigDict
from msst_registry.errors import ConfigFileError
from msst_registry.loading import load_msst_config


class ConfigError(ValueError):
    """A config file that cannot be read or lacks what is needed."""


def load_config(path: str | os.PathLike[str]) -> ConfigDict:
    """Load an MSST config; `!!python/tuple` works as in MSST. Needs a `model` section."""
    try:
        config = load_msst_config(path)
    except FileNotFoundError as error:
        raise ConfigError(f"config {os.fspath(path)} does not exist") from error
    except ConfigFileError as error:
        raise ConfigError(str(error)) from error
    if not isinstance(config.get("model"), ConfigDict):
        raise ConfigError(f"config {os.fspath(path)} has no 'model' section (a mapping of BSMamba2's keywords)")
    return config
