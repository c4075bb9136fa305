"""msst-registry against real installed metadata.

Extra plugin distributions are real `*.dist-info` folders with `entry_points.txt`, written
to a temporary folder that is put on sys.path, so importlib.metadata finds them exactly as
it finds pip-installed ones.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import msst_registry
from msst_registry import (
    MSST_BUILTIN_MODEL_TYPES,
    PluginLoadError,
    PluginsDisabledError,
    UnknownModelTypeError,
    discover_entries,
    get_model_from_config,
    plugin_model_types,
)

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from msst_tiny_run import write_tiny_config  # noqa: E402

# An MSST checkout's settings.py when MSST_CHECKOUT names one, else the installed `msst` package's
# (the same if/elif chain of built-in model types, packaged).
MSST_SETTINGS = Path(os.environ["MSST_CHECKOUT"]) / "utils" / "settings.py" if os.environ.get("MSST_CHECKOUT") else None


def make_distribution(site: Path, dist: str, version: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[msst.models]\n{lines}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "good-plugin", "1.2.3", {"tiny_linear": "good_plugin_mod:build"}, {
        "good_plugin_mod": """
            import torch
            def build(config):
                return torch.nn.Linear(config.model.width, 1)
        """,
    })
    make_distribution(site, "broken-plugin", "0.9", {"broken_model": "broken_plugin_mod:build"}, {
        "broken_plugin_mod": "import a_module_that_is_not_installed_anywhere\n",
    })
    make_distribution(site, "shadow-plugin", "2.0", {"bs_mamba2": "shadow_mod:build", "my_roformer": "shadow_mod:build"},
                      {"shadow_mod": "raise RuntimeError('must never be imported')\n"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("MSST_DISABLE_PLUGINS", raising=False)
    for name in ("good_plugin_mod", "broken_plugin_mod", "shadow_mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return site


def test_builtin_list_matches_msst_settings():
    """Every `model_type == '...'` branch of MSST's get_model_from_config is a protected built-in."""
    import importlib.util
    import re

    settings = MSST_SETTINGS
    if settings is None or not settings.is_file():
        spec = importlib.util.find_spec("msst")
        if spec is None:
            if os.environ.get("MSST_TESTS_REQUIRED"):
                pytest.fail("the msst package is not installed but MSST_TESTS_REQUIRED is set")
            pytest.skip("neither MSST_CHECKOUT nor the msst package")
        settings = Path(spec.origin).parent / "utils" / "settings.py"

    names = set(re.findall(r"model_type == '([a-z0-9_]+)'", settings.read_text()))
    assert len(names) > 20
    assert names <= MSST_BUILTIN_MODEL_TYPES, names - MSST_BUILTIN_MODEL_TYPES


def test_bsmamba2_is_registered_by_this_package():
    entries = {e.name: e for e in discover_entries()}
    assert entries["bsmamba2"].distribution == "bsmamba2-plugin"
    assert entries["bsmamba2"].target == "bsmamba2_plugin.msst_entry:build_model"
    assert entries["bsmamba2"].usable
    assert "bsmamba2" in plugin_model_types()


def test_listing_imports_neither_torch_nor_any_plugin():
    code = (
        "import sys, msst_registry\n"
        "from msst_registry.listing import main\n"
        "main([])\n"
        "print('TORCH', 'torch' in sys.modules)\n"
        "print('PLUGIN', sorted(m for m in sys.modules if m.startswith('bsmamba2_plugin')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "MSST_COMPAT_DISABLE": "1"}).stdout
    assert "bsmamba2" in out and "bsmamba2-plugin" in out
    assert "TORCH False" in out
    assert "PLUGIN []" in out


def test_clashes_are_reported_and_never_imported(fake_site):
    entries = {(e.name, e.distribution): e for e in discover_entries()}
    shadow = entries[("bs_mamba2", "shadow-plugin")]
    assert not shadow.usable and "built-in" in shadow.problem
    roformer = entries[("my_roformer", "shadow-plugin")]
    assert not roformer.usable and "roformer" in roformer.problem
    assert "bs_mamba2" not in plugin_model_types()
    with pytest.raises(UnknownModelTypeError, match="shadow-plugin 2.0.*shadows MSST's built-in"):
        msst_registry.load_builder("bs_mamba2")
    assert "shadow_mod" not in sys.modules


def test_broken_plugin_reported_only_when_asked_for(fake_site):
    assert "broken_model" in plugin_model_types()  # listing still works
    with pytest.raises(PluginLoadError) as caught:
        msst_registry.load_builder("broken_model")
    error = caught.value
    assert (error.name, error.distribution, error.version) == ("broken_model", "broken-plugin", "0.9")
    assert isinstance(error.original, ModuleNotFoundError)
    assert "a_module_that_is_not_installed_anywhere" in str(error)
    # The good plugin next to it is unaffected, and loading it imports only it.
    builder = msst_registry.load_builder("tiny_linear")
    assert callable(builder) and "good_plugin_mod" in sys.modules


def test_duplicate_registration_is_a_reported_conflict(fake_site):
    make_distribution(fake_site, "other-plugin", "3.1", {"tiny_linear": "other_mod:build"}, {"other_mod": ""})
    problems = [e for e in discover_entries() if e.name == "tiny_linear"]
    assert len(problems) == 2 and all("more than one distribution" in e.problem for e in problems)
    with pytest.raises(UnknownModelTypeError, match="good-plugin 1.2.3.*other-plugin 3.1|other-plugin 3.1.*good-plugin"):
        msst_registry.find_entry("tiny_linear")


def test_environment_variable_turns_plugins_off(fake_site, monkeypatch, tmp_path):
    monkeypatch.setenv("MSST_DISABLE_PLUGINS", "1")
    assert plugin_model_types() == []
    with pytest.raises(PluginsDisabledError, match="MSST_DISABLE_PLUGINS"):
        get_model_from_config("bsmamba2", write_tiny_config(tmp_path / "c.yaml"))


def test_get_model_from_config_follows_msst_semantics(fake_site, tmp_path):
    from bsmamba2_plugin.model import BSMamba2

    config_path = write_tiny_config(tmp_path / "tiny.yaml")
    # training.model_type (bsmamba2) overrides the argument, as in MSST.
    model, config = get_model_from_config("mdx23c", config_path)
    assert isinstance(model, BSMamba2) and model.num_stems == 2
    assert type(config).__name__ == "ConfigDict"
    assert config.model.freqs_per_bands == (32, 32, 65)  # !!python/tuple read by FullLoader

    other = tmp_path / "linear.yaml"
    other.write_text("training:\n  model_type: tiny_linear\n  instruments: [a]\nmodel:\n  width: 7\n")
    model, _ = get_model_from_config("bsmamba2", other)
    assert type(model).__name__ == "Linear" and model.in_features == 7


def test_unknown_and_builtin_types_say_what_exists(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  instruments: [vocals]\nmodel: {}\n")
    with pytest.raises(UnknownModelTypeError, match="unknown model type 'nope'.*bsmamba2"):
        get_model_from_config("nope", config)
    with pytest.raises(UnknownModelTypeError, match="built into MSST"):
        get_model_from_config("bs_roformer", config)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        get_model_from_config("bsmamba2", tmp_path / "missing.yaml")


def test_bad_model_key_names_its_path(tmp_path):
    config_path = write_tiny_config(tmp_path / "tiny.yaml")
    text = config_path.read_text().replace("  mask_estimator_depth: 1\n", "  mask_estimator_depth: 1\n  dimm: 3\n")
    config_path.write_text(text)
    with pytest.raises(ValueError, match="dimm") as caught:
        get_model_from_config("bsmamba2", config_path)
    assert "bsmamba2-plugin" in "".join(getattr(caught.value, "__notes__", []))

    config_path.write_text(write_tiny_config(tmp_path / "t2.yaml").read_text().replace("  num_stems: 2\n", "  num_stems: 1\n"))
    with pytest.raises(ValueError, match=r"model.num_stems=1 but training.instruments has 2 entries"):
        get_model_from_config("bsmamba2", config_path)


def test_msst_models_command(fake_site):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(fake_site), "MSST_COMPAT_DISABLE": "1"}
    listing = subprocess.run([sys.executable, "-m", "msst_registry"], capture_output=True, text=True, env=env)
    out = listing.stdout
    assert "bsmamba2" in out and "bsmamba2_plugin.msst_entry:build_model" in out
    assert "broken_model" in out and "BROKEN" not in out  # not imported without --check
    assert "NOT USED: shadows MSST's built-in model type 'bs_mamba2'" in out
    assert listing.returncode == 1  # a clash is a problem worth a non-zero exit

    checked = subprocess.run([sys.executable, "-m", "msst_registry", "--check", "--plugins-only"],
                             capture_output=True, text=True, env=env)
    assert "BROKEN: model type 'broken_model' is registered by broken-plugin 0.9" in checked.stdout
    assert "ModuleNotFoundError" in checked.stdout
    assert "bsmamba2" in checked.stdout and "[imports ok]" in checked.stdout
    assert "MSST built-in" not in checked.stdout

    disabled = subprocess.run([sys.executable, "-m", "msst_registry"], capture_output=True, text=True,
                              env={**env, "MSST_DISABLE_PLUGINS": "1"})
    assert "plugin loading is disabled" in disabled.stdout and "bsmamba2 " not in disabled.stdout
