"""Finding registered model types from installed metadata only: nothing is imported here.

A plugin distribution declares, in its pyproject.toml,

    [project.entry-points."msst.models"]
    my_model = "my_package.msst_entry:build_model"

The entry name is the model_type users write (`--model_type my_model` or
`training.model_type: my_model`); the target is a callable taking the loaded config
(an ml_collections ConfigDict) and returning the torch module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

from .builtin_types import MSST_BUILTIN_MODEL_TYPES, unsafe_name_reason

ENTRY_POINT_GROUP = "msst.models"
DISABLE_ENV_VAR = "MSST_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginEntry:
    """One `msst.models` entry point as the installed metadata describes it."""

    name: str
    target: str
    distribution: str
    version: str
    problem: str | None = None  # why this entry is not used; None when it is usable

    @property
    def usable(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        return f"{self.name!r} ({self.target}) from {self.distribution} {self.version}"


def plugins_disabled() -> bool:
    """True when the user turned plugin loading off (MSST_DISABLE_PLUGINS=1/true/yes)."""
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def discover_entries() -> list[PluginEntry]:
    """Every entry point of the group, each marked with the problem that bars it, if any."""
    raw = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        raw.append((entry_point.name, entry_point.value, dist_name, version))

    by_name: dict[str, list[tuple[str, str, str, str]]] = {}
    for item in raw:
        by_name.setdefault(item[0], []).append(item)

    entries = []
    for name, items in sorted(by_name.items()):
        for _, target, dist_name, version in items:
            problem = None
            if name in MSST_BUILTIN_MODEL_TYPES:
                problem = f"shadows MSST's built-in model type {name!r}; the built-in is kept"
            elif (reason := unsafe_name_reason(name)) is not None:
                problem = f"unusable name: {reason}"
            elif len(items) > 1:
                others = ", ".join(f"{d} {v}" for _, _, d, v in items if d != dist_name) or "itself twice"
                problem = f"registered by more than one distribution (also {others}); uninstall all but one"
            entries.append(PluginEntry(name, target, dist_name, version, problem))
    return entries
