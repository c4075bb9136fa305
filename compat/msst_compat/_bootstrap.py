"""Run by msst_compat.pth at every interpreter start: must stay tiny (< 5 ms) and import no torch.

It only puts a finder on sys.meta_path. The finder answers for a handful of module names and
for those only wraps the real loader so that, once the module has executed, msst_compat.patching
(imported then, not now) decides whether it is MSST's module and patches it.
"""
import os
import sys

# Module name -> the kind of consumer it may belong to; patching checks which it really is.
TARGETS = {
    "utils.settings": "msst_checkout",
    "msst.utils.settings": "msst_package",
    "utils.utils": "msst_webui",
    "utils.constant": "msst_webui",
}


class PatchingLoader:
    """Delegates to the real loader, then hands the executed module to msst_compat.patching."""

    def __init__(self, loader, kind):
        self._loader = loader
        self._kind = kind

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            from msst_compat.patching import patch_module
            patch_module(module, self._kind)
        except Exception as error:  # never break the user's import because of the hook
            import warnings
            warnings.warn(f"msst-compat could not patch {module.__name__}: {type(error).__name__}: {error}",
                          RuntimeWarning, stacklevel=2)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class MSSTModuleFinder:
    """A meta-path finder that only ever answers for the names in TARGETS."""

    def find_spec(self, fullname, path, target=None):
        kind = TARGETS.get(fullname)
        if kind is None:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, MSSTModuleFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module") or isinstance(loader, PatchingLoader):
            return spec
        spec.loader = PatchingLoader(loader, kind)
        return spec

    def invalidate_caches(self):
        pass


def install_finder():
    """Put the finder first on sys.meta_path unless one is there already. True if added."""
    if any(isinstance(finder, MSSTModuleFinder) for finder in sys.meta_path):
        return False
    sys.meta_path.insert(0, MSSTModuleFinder())
    return True


if os.environ.get("MSST_COMPAT_DISABLE", "").strip().lower() not in ("1", "true", "yes", "on"):
    install_finder()
