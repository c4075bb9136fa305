"""Recognising MSST's own modules and wrapping their model factories for plugin model types.

Imported only when a candidate module (see _bootstrap.TARGETS) has just been executed, so this
may import what it needs. A module is patched only when it is positively recognised; anything
else that happens to be called `utils.settings` is left exactly as it was.
"""
from __future__ import annotations

import functools
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORIGINAL_ATTR = "__msst_compat_original__"


def is_msst_checkout_settings(module: types.ModuleType) -> bool:
    """MSST's utils/settings.py in a checkout: the file sits in <root>/utils/ of a tree with
    MSST's scripts and models package, and defines get_model_from_config and load_config."""
    file = getattr(module, "__file__", None)
    if not file or not callable(getattr(module, "get_model_from_config", None)) \
            or not callable(getattr(module, "load_config", None)):
        return False
    utils_dir = Path(file).resolve().parent
    root = utils_dir.parent
    return (utils_dir.name == "utils" and (utils_dir / "model_utils.py").is_file()
            and (root / "train.py").is_file() and (root / "inference.py").is_file()
            and (root / "models").is_dir())


def is_msst_package_settings(module: types.ModuleType) -> bool:
    """`msst.utils.settings` of the PyPI package `msst` (packaged MSST)."""
    package = sys.modules.get("msst")
    package_file = getattr(package, "__file__", None)
    return (module.__name__ == "msst.utils.settings" and package_file is not None
            and (Path(package_file).parent / "cli.py").is_file()
            and callable(getattr(module, "build_model_from_config", None))
            and callable(getattr(module, "get_model_from_config", None)))


def webui_root(module: types.ModuleType) -> Path | None:
    """The MSST-WebUI checkout holding this utils.* module, or None."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    root = Path(file).resolve().parent.parent
    markers = (root / "webUI.py", root / "inference" / "msst_infer.py", root / "utils" / "constant.py")
    return root if all(m.is_file() for m in markers) else None


def _plugin_types() -> list[str]:
    from msst_registry import plugin_model_types

    return plugin_model_types()


def _peek_model_type(model_type: str, config_path: Any) -> str:
    """The model type MSST will use: `training.model_type` from the YAML, else the argument.
    Unreadable files give the argument back; the original loader then reports them its own way."""
    from msst_registry import effective_model_type, load_msst_config

    try:
        config = load_msst_config(os.fspath(config_path))
    except Exception:  # noqa: BLE001 - MSST's own loader will produce its usual error
        return model_type
    return effective_model_type(model_type, config)


def _mark(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(wrapper, original)
    setattr(wrapper, ORIGINAL_ATTR, original)
    return wrapper


def wrap_get_model_from_config(original: Callable[..., Any]) -> Callable[..., Any]:
    """MSST's get_model_from_config(model_type, config_path): plugin types go to the registry."""
    if hasattr(original, ORIGINAL_ATTR):
        return original

    def get_model_from_config(model_type, config_path, *args, **kwargs):
        plugins = _plugin_types()
        if plugins:
            wanted = _peek_model_type(model_type, config_path)
            if wanted in plugins:
                from msst_registry import get_model_from_config as plugin_get_model_from_config

                return plugin_get_model_from_config(model_type, config_path)
        return original(model_type, config_path, *args, **kwargs)

    return _mark(get_model_from_config, original)


def wrap_build_model_from_config(original: Callable[..., Any]) -> Callable[..., Any]:
    """msst's build_model_from_config(model_type, config, *, pretrained=False)."""
    if hasattr(original, ORIGINAL_ATTR):
        return original

    def build_model_from_config(model_type, config, *args, **kwargs):
        from msst_registry import build_model, effective_model_type

        plugins = _plugin_types()
        if plugins and effective_model_type(model_type, config) in plugins:
            return build_model(model_type, config)
        return original(model_type, config, *args, **kwargs)

    return _mark(build_model_from_config, original)


def patch_module(module: types.ModuleType, kind: str) -> bool:
    """Patch `module` if it is recognised as the consumer `kind` says it may be. True if patched."""
    if kind == "msst_checkout" and module.__name__ == "utils.settings":
        if is_msst_checkout_settings(module):
            module.get_model_from_config = wrap_get_model_from_config(module.get_model_from_config)
            return True
        return False
    if kind == "msst_package" and is_msst_package_settings(module):
        module.build_model_from_config = wrap_build_model_from_config(module.build_model_from_config)
        return True
    if kind == "msst_webui" and webui_root(module) is not None:
        if module.__name__ == "utils.utils" and callable(getattr(module, "get_model_from_config", None)):
            module.get_model_from_config = wrap_get_model_from_config(module.get_model_from_config)
            return True
        if module.__name__ == "utils.constant" and isinstance(getattr(module, "MODEL_TYPE", None), list):
            # In place: the WebUI's drop-downs and CLI choices read this list.
            module.MODEL_TYPE.extend(t for t in _plugin_types() if t not in module.MODEL_TYPE)
            return True
    return False


def patch_already_imported() -> list[str]:
    """Patch candidate modules that were imported before the hook was installed."""
    from ._bootstrap import TARGETS

    patched = []
    for name, kind in TARGETS.items():
        module = sys.modules.get(name)
        if module is not None and patch_module(module, kind):
            patched.append(name)
    return patched


def is_patched(function: Callable[..., Any]) -> bool:
    return hasattr(function, ORIGINAL_ATTR)
