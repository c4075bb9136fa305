"""A virtual environment for a test that sees exactly the packages of the Python running the tests.

`python -m venv --system-site-packages` would see the *base* interpreter's site-packages: when the
tests themselves run inside a virtual environment, that is not where torch, msst and the plugin
were installed, and it may hold packages the running Python does not see. So the inner
environment is made without system site-packages, and a .pth file in it adds the running
Python's own site directories (site.addsitedir, so their .pth files, such as an editable
install's finder, are processed too) after its own site-packages, which therefore win.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

OUTER_PTH = "zz_outer_environment.pth"  # sorts after the inner packages' own .pth files


def running_site_dirs() -> list[str]:
    """The site directories of this interpreter, in its order: its venv's (and the base's only
    where this environment includes system site-packages), then the user site if it is enabled."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def purelib(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def create(root: Path, wheels: list[Path] = ()) -> Path:
    """Make the environment under ``root``, install ``wheels`` into it (no dependencies), then
    link the running Python's site directories; returns the inner interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if wheels:
        # Installed before the outer directories are linked, so pip sees only the inner environment.
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                        "--force-reinstall", "-q", *map(str, wheels)], check=True)
    lines = [f"import site; site.addsitedir({d!r})" for d in running_site_dirs()]
    (purelib(python) / OUTER_PTH).write_text("\n".join(lines) + "\n")
    return python
