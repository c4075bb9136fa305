"""Importing one plugin on demand and building its model the way MSST builds its own."""
from __future__ import annotations

import os
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .builtin_types import MSST_BUILTIN_MODEL_TYPES
from .discovery import DISABLE_ENV_VAR, ENTRY_POINT_GROUP, PluginEntry, discover_entries, plugins_disabled
from .errors import ConfigFileError, PluginLoadError, PluginsDisabledError, UnknownModelTypeError

ModelBuilder = Callable[[Any], Any]

_loaded: dict[tuple[str, str], ModelBuilder] = {}


def plugin_model_types() -> list[str]:
    """Names of the usable plugin model types (empty when plugins are disabled). Imports nothing."""
    if plugins_disabled():
        return []
    return [entry.name for entry in discover_entries() if entry.usable]


def is_plugin_model_type(model_type: object) -> bool:
    """Whether `model_type` names a usable plugin. Imports nothing."""
    return isinstance(model_type, str) and model_type in plugin_model_types()


def find_entry(model_type: str) -> PluginEntry:
    """The usable entry for `model_type`, or an error that says why there is none."""
    if plugins_disabled():
        raise PluginsDisabledError(
            f"model type {model_type!r}: plugin loading is disabled ({DISABLE_ENV_VAR}="
            f"{os.environ.get(DISABLE_ENV_VAR)}); unset it to use plugin model types"
        )
    entries = [e for e in discover_entries() if e.name == model_type]
    usable = [e for e in entries if e.usable]
    if usable:
        return usable[0]
    if entries:
        raise UnknownModelTypeError(
            f"model type {model_type!r} cannot be used: " + "; ".join(f"{e.describe()} {e.problem}" for e in entries)
        )
    if model_type in MSST_BUILTIN_MODEL_TYPES:
        raise UnknownModelTypeError(
            f"model type {model_type!r} is built into MSST, not a plugin; MSST's own get_model_from_config builds it"
        )
    known = plugin_model_types()
    raise UnknownModelTypeError(
        f"unknown model type {model_type!r}: no installed distribution registers it in the "
        f"{ENTRY_POINT_GROUP!r} entry-point group (plugin types: {', '.join(known) or 'none'}; "
        f"MSST built-ins: {', '.join(sorted(MSST_BUILTIN_MODEL_TYPES))})"
    )


def load_builder(model_type: str) -> ModelBuilder:
    """Import the plugin registering `model_type` (and only it); return its model builder."""
    entry = find_entry(model_type)
    key = (entry.name, entry.target)
    if key not in _loaded:
        matches = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=model_type)
                   if ep.value == entry.target]
        try:
            builder = matches[0].load()
        except Exception as error:  # noqa: BLE001 - any import failure is reported with the plugin's identity
            raise PluginLoadError(entry.name, entry.distribution, entry.version, entry.target, error) from error
        if not callable(builder):
            raise PluginLoadError(entry.name, entry.distribution, entry.version, entry.target,
                                  TypeError(f"{entry.target} is a {type(builder).__name__}, not a callable"))
        _loaded[key] = builder
    return _loaded[key]


def load_msst_config(config_path: str | os.PathLike[str]) -> Any:
    """Read a YAML config as MSST does: PyYAML FullLoader (so !!python/tuple works) into a ConfigDict."""
    import yaml
    from ml_collections import ConfigDict

    path = os.fspath(config_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Configuration file not found at {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=yaml.FullLoader)
    except yaml.YAMLError as error:
        raise ConfigFileError(f"config {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigFileError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return ConfigDict(data)


def effective_model_type(model_type: str, config: Any) -> str:
    """MSST's rule: `training.model_type` in the YAML overrides the command-line model type."""
    training = config.get("training") if hasattr(config, "get") else None
    if training is not None and "model_type" in training:
        return training["model_type"]
    return model_type


def build_model(model_type: str, config: Any) -> Any:
    """Build a plugin model from an already loaded config (after the `training.model_type` override)."""
    model_type = effective_model_type(model_type, config)
    builder = load_builder(model_type)
    entry = find_entry(model_type)
    try:
        model = builder(config)
    except Exception as error:
        # The plugin's own message names the bad key; add which plugin raised it, keep the type.
        if hasattr(error, "add_note"):
            error.add_note(f"while building model type {model_type!r} with {entry.describe()}")
        raise
    if not hasattr(model, "state_dict"):
        raise PluginLoadError(entry.name, entry.distribution, entry.version, entry.target,
                              TypeError(f"the builder returned a {type(model).__name__}, not a torch module"))
    return model


def get_model_from_config(model_type: str, config_path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """MSST's `get_model_from_config` for plugin model types: returns (model, config)."""
    config = load_msst_config(config_path)
    return build_model(model_type, config), config
