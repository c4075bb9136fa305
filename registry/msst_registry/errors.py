"""Errors of the registry; each names the model type, the plugin and what to do."""
from __future__ import annotations


class RegistryError(ValueError):
    """A model type that cannot be built through the registry."""


class UnknownModelTypeError(RegistryError):
    """No usable plugin registers this model type."""


class PluginsDisabledError(RegistryError):
    """Plugin loading is switched off by the environment."""


class PluginLoadError(RegistryError):
    """A registered plugin whose code fails to import or to build its model."""

    def __init__(self, name: str, distribution: str, version: str, target: str, original: BaseException):
        self.name = name
        self.distribution = distribution
        self.version = version
        self.target = target
        self.original = original
        super().__init__(
            f"model type {name!r} is registered by {distribution} {version} ({target}), but loading it failed: "
            f"{type(original).__name__}: {original}"
        )


class ConfigFileError(RegistryError):
    """A config file that cannot be read as MSST reads it."""
