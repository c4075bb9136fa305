"""msst-registry: model types for MSST (Music-Source-Separation-Training) from installed plugins.

Plugins register in the `msst.models` entry-point group (entry name = model_type). Listing
reads installed metadata only (no torch, no plugin import); building imports just the one
plugin asked for. MSST's built-in names cannot be taken by a plugin. MSST_DISABLE_PLUGINS=1
turns plugin loading off.
"""
from __future__ import annotations

from .builtin_types import MSST_BUILTIN_MODEL_TYPES, unsafe_name_reason
from .discovery import DISABLE_ENV_VAR, ENTRY_POINT_GROUP, PluginEntry, discover_entries, plugins_disabled
from .errors import (
    ConfigFileError,
    PluginLoadError,
    PluginsDisabledError,
    RegistryError,
    UnknownModelTypeError,
)
from .loading import (
    build_model,
    effective_model_type,
    find_entry,
    get_model_from_config,
    is_plugin_model_type,
    load_builder,
    load_msst_config,
    plugin_model_types,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigFileError",
    "DISABLE_ENV_VAR",
    "ENTRY_POINT_GROUP",
    "MSST_BUILTIN_MODEL_TYPES",
    "PluginEntry",
    "PluginLoadError",
    "PluginsDisabledError",
    "RegistryError",
    "UnknownModelTypeError",
    "build_model",
    "discover_entries",
    "effective_model_type",
    "find_entry",
    "get_model_from_config",
    "is_plugin_model_type",
    "load_builder",
    "load_msst_config",
    "plugin_model_types",
    "plugins_disabled",
    "unsafe_name_reason",
]
