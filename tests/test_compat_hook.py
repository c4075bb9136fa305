"""The msst-compat .pth hook in a fresh virtual environment where the wheels are installed.

The venv sees exactly the packages of the Python running the tests (tests/inner_venv.py), to
reuse the installed torch and the plugin; msst-registry and msst-compat are built as wheels from
this checkout and installed into the venv, whose site-packages come first (the test checks that
its copy is the one used).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import inner_venv  # noqa: E402
from msst_tiny_run import write_tiny_config  # noqa: E402

START_COST_LIMIT_US = 5000


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat_venv")
    wheels = root / "wheels"
    # Build from clean copies: a build/ folder left in the checkout must not leak into the wheel.
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    for name in ("registry", "compat"):
        shutil.copytree(REPO / name, root / "src" / name, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(root / "src" / "registry"), str(root / "src" / "compat")], check=True)
    assert (wheels / "msst_compat-0.1.0-py3-none-any.whl").is_file()
    python = inner_venv.create(root / "venv", sorted(wheels.glob("*.whl")))
    site = inner_venv.purelib(python)
    assert (Path(site) / "msst_compat.pth").is_file(), "the wheel must put msst_compat.pth in site-packages"
    return python


def run(python: Path, code: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MSST_COMPAT_DISABLE", "PYTHONPATH")}
    environment.update(env)
    return subprocess.run([str(python), *(["-c", code] if code else [])], capture_output=True, text=True,
                          cwd=cwd, env=environment)


def test_wheel_copy_is_the_one_in_use(venv):
    result = run(venv, "import msst_compat, msst_registry; print(msst_compat.__file__); print(msst_registry.__file__)")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.split():
        assert line.startswith(str(venv.parent.parent)), line


def test_inner_environment_sees_exactly_the_running_pythons_packages(venv):
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))")
    outer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    inner = run(venv, code)
    assert inner.returncode == 0, inner.stderr
    assert inner.stdout == outer  # the wheels installed inside are also installed outside
    where = run(venv, "import torch, bsmamba2_plugin; print(torch.__file__); print(bsmamba2_plugin.__file__)")
    expected = subprocess.run([sys.executable, "-c", "import torch, bsmamba2_plugin; print(torch.__file__); "
                               "print(bsmamba2_plugin.__file__)"], capture_output=True, text=True, check=True)
    assert where.stdout == expected.stdout


def test_start_cost_and_no_torch(venv):
    code = "import sys; print('torch' in sys.modules, 'MSSTModuleFinder' in [type(f).__name__ for f in sys.meta_path])"
    run(venv, "pass")  # warm the file cache before timing
    result = subprocess.run([str(venv), "-X", "importtime", "-c", code], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "MSST_COMPAT_DISABLE"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    own = [line for line in result.stderr.splitlines() if re.search(r"\|\s*msst_compat", line)]
    assert own, "msst_compat was not imported at start: the .pth did not run"
    self_us = sum(int(line.split("|")[0].split(":")[1]) for line in own)
    print(f"msst_compat start cost: {self_us} us over {len(own)} module(s)")
    assert self_us < START_COST_LIMIT_US
    # Nothing beyond msst_compat's own two modules is imported at start.
    assert sorted(line.split("|")[-1].strip() for line in own) == ["msst_compat", "msst_compat._bootstrap"]


def test_environment_variable_turns_the_hook_off(venv):
    result = run(venv, "import sys; print([type(f).__name__ for f in sys.meta_path])", MSST_COMPAT_DISABLE="1")
    assert "MSSTModuleFinder" not in result.stdout


def make_msst_like_checkout(root: Path) -> Path:
    """The shape MSST's checkout has (scripts, models/, utils/model_utils.py) with a settings.py
    whose factory knows only its own types, like MSST's if/elif chain."""
    (root / "models").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "models" / "__init__.py").write_text("")
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "model_utils.py").write_text("")
    (root / "inference.py").write_text("")
    (root / "utils" / "settings.py").write_text(textwrap.dedent("""
        import yaml
        from ml_collections import ConfigDict

        def load_config(model_type, config_path):
            with open(config_path) as f:
                return ConfigDict(yaml.load(f, Loader=yaml.FullLoader))

        def get_model_from_config(model_type, config_path):
            config = load_config(model_type, config_path)
            if 'model_type' in config.training:
                model_type = config.training.model_type
            if model_type == 'mdx23c':
                return 'built-in mdx23c', config
            raise ValueError(f"Unknown model type: {model_type}")
    """))
    (root / "train.py").write_text(textwrap.dedent("""
        import sys
        from utils.settings import get_model_from_config  # bound at import, as MSST's scripts do
        model, config = get_model_from_config(sys.argv[sys.argv.index('--model_type') + 1],
                                              sys.argv[sys.argv.index('--config_path') + 1])
        print('BUILT', type(model).__name__, model.num_stems)
    """))
    return root


def test_patches_msst_checkout_settings(venv, tmp_path):
    checkout = make_msst_like_checkout(tmp_path / "msst")
    config = write_tiny_config(tmp_path / "tiny.yaml")
    no_override = tmp_path / "plain.yaml"
    no_override.write_text(config.read_text().replace("  model_type: bsmamba2\n", ""))

    code = textwrap.dedent(f"""
        import sys
        from utils.settings import get_model_from_config
        from msst_compat.patching import is_patched
        print('PATCHED', is_patched(get_model_from_config))
        model, config = get_model_from_config('mdx23c', {str(config)!r})  # YAML's bsmamba2 wins
        print('YAML', type(model).__name__, type(config).__name__)
        model, _ = get_model_from_config('bsmamba2', {str(no_override)!r})
        print('CLI', type(model).__name__)
        print('BUILTIN', get_model_from_config('mdx23c', {str(no_override)!r})[0])
    """)
    result = run(venv, code, cwd=checkout)
    assert result.returncode == 0, result.stderr
    assert "PATCHED True" in result.stdout
    assert "YAML BSMamba2 ConfigDict" in result.stdout
    assert "CLI BSMamba2" in result.stdout
    assert "BUILTIN built-in mdx23c" in result.stdout

    off = run(venv, code, cwd=checkout, MSST_COMPAT_DISABLE="1")
    assert off.returncode != 0 and "Unknown model type: bsmamba2" in off.stderr

    train = subprocess.run([str(venv), "train.py", "--model_type", "bsmamba2", "--config_path", str(no_override)],
                           capture_output=True, text=True, cwd=checkout,
                           env={k: v for k, v in os.environ.items() if k != "MSST_COMPAT_DISABLE"})
    assert train.returncode == 0, train.stderr
    assert "BUILT BSMamba2 2" in train.stdout


def test_launcher_without_the_pth(venv, tmp_path):
    checkout = make_msst_like_checkout(tmp_path / "msst")
    config = write_tiny_config(tmp_path / "tiny.yaml")
    env = {k: v for k, v in os.environ.items()}
    env["MSST_COMPAT_DISABLE"] = "1"  # the .pth hook is off; only the launcher can enable plugin types
    result = subprocess.run([str(venv), "-m", "msst_compat", "train.py", "--model_type", "bsmamba2",
                             "--config_path", str(config)], capture_output=True, text=True, cwd=checkout, env=env)
    assert result.returncode == 0, result.stderr
    assert "BUILT BSMamba2 2" in result.stdout
    missing = subprocess.run([str(venv), "-m", "msst_compat", "nope.py"], capture_output=True, text=True,
                             cwd=checkout, env=env)
    assert missing.returncode != 0 and "script 'nope.py' not found" in missing.stderr


def test_unrelated_utils_settings_left_alone(venv, tmp_path):
    project = tmp_path / "someone_else"
    (project / "utils").mkdir(parents=True)
    (project / "utils" / "__init__.py").write_text("")
    (project / "utils" / "settings.py").write_text(
        "def load_config(model_type, path):\n    return {}\n"
        "def get_model_from_config(model_type, config_path):\n    return ('mine', model_type)\n"
    )
    (project / "train.py").write_text("")  # one marker alone must not be enough
    config = write_tiny_config(tmp_path / "tiny.yaml")
    code = textwrap.dedent(f"""
        import utils.settings as s
        print(hasattr(s.get_model_from_config, '__msst_compat_original__'), s.get_model_from_config.__module__)
        print(s.get_model_from_config('bsmamba2', {str(config)!r}))
    """)
    result = run(venv, code, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False utils.settings", "('mine', 'bsmamba2')"]


def test_patches_msst_webui_modules(venv, tmp_path):
    """MSST-WebUI's layout (webUI.py, inference/msst_infer.py, utils/constant.py, utils/utils.py)."""
    webui = tmp_path / "webui"
    (webui / "inference").mkdir(parents=True)
    (webui / "utils").mkdir()
    (webui / "webUI.py").write_text("")
    (webui / "inference" / "msst_infer.py").write_text("")
    (webui / "utils" / "__init__.py").write_text("")
    (webui / "utils" / "constant.py").write_text("MODEL_TYPE = ['bs_roformer', 'mdx23c', 'bs_mamba2']\n")
    (webui / "utils" / "utils.py").write_text(
        "def get_model_from_config(model_type, config_path):\n    return None, None\n"
    )
    config = write_tiny_config(tmp_path / "tiny.yaml")
    code = textwrap.dedent(f"""
        from utils.constant import MODEL_TYPE
        from utils.utils import get_model_from_config
        print(MODEL_TYPE)
        print(type(get_model_from_config('bsmamba2', {str(config)!r})[0]).__name__)
    """)
    result = run(venv, code, cwd=webui)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['bs_roformer', 'mdx23c', 'bs_mamba2', 'bsmamba2']", "BSMamba2"]


def test_patches_msst_package(venv, tmp_path):
    pytest.importorskip("msst", reason="the PyPI msst package is not installed (CI installs it)")
    if subprocess.run([sys.executable, "-c", "import msst.utils.settings"], capture_output=True).returncode != 0:
        if os.environ.get("MSST_TESTS_REQUIRED"):
            pytest.fail("msst.utils.settings cannot be imported but MSST_TESTS_REQUIRED is set")
        pytest.skip("msst's dependencies are not installed")
    config = write_tiny_config(tmp_path / "tiny.yaml")
    code = textwrap.dedent(f"""
        import msst.utils.settings as s
        from msst_compat.patching import is_patched
        print('PATCHED', is_patched(s.build_model_from_config), is_patched(s.get_model_from_config))
        model, config = s.get_model_from_config('bsmamba2', {str(config)!r})
        print('BUILT', type(model).__name__, model.num_stems)
    """)
    result = run(venv, code)
    assert result.returncode == 0, result.stderr
    assert "PATCHED True False" in result.stdout  # msst's get_model_from_config calls the patched builder
    assert "BUILT BSMamba2 2" in result.stdout
