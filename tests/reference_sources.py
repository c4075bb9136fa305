"""Where the MSST equivalence tests get the real reference sources, pinned by version and hash.

- MSST's `bs_mamba2.py` and `attend_mamba.py`: from the installed `msst` 0.1.0 package, else
  from its wheel (`pip download`), else from a checkout of the MSST repository named by the
  environment variable MSST_CHECKOUT.
- mamba-ssm's Python sources: from its source distribution (`pip download --no-binary`; PyPI
  has no wheel). Nothing is built or installed: the tests read the files.
- einops and rotary-embedding-torch (imported by MSST's file): the installed packages, else
  their wheels, put on sys.path for the import only.

Downloads go to a cache folder (BSMAMBA2_REFERENCE_CACHE, else pytest's cache, else the
temporary folder). When they are
impossible because the network is unreachable, `ReferenceUnavailable` is raised and the tests
skip; with BSMAMBA2_REQUIRE_REFERENCE=1 (CI) they fail instead.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "BSMAMBA2_REFERENCE_CACHE"
REQUIRE_ENV = "BSMAMBA2_REQUIRE_REFERENCE"
MSST_CHECKOUT_ENV = "MSST_CHECKOUT"


class ReferenceUnavailable(RuntimeError):
    """The reference sources cannot be had here (no network): the tests skip, not fail."""


@dataclass(frozen=True)
class PinnedFile:
    """One file of a release on PyPI, identified by its content."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(".tar.gz")


MSST_WHEEL = PinnedFile(
    "msst", "0.1.0", "msst-0.1.0-py3-none-any.whl",
    "3998709661d489af1101c11229b3c184f9ea4d3720aca03df7fedc542ca1d0e4",
)
MAMBA_SSM_SDIST = PinnedFile(
    "mamba-ssm", "2.3.2.post1", "mamba_ssm-2.3.2.post1.tar.gz",
    "104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028",
)
PURE_PYTHON_WHEELS = {
    "einops": PinnedFile(
        "einops", "0.8.2", "einops-0.8.2-py3-none-any.whl",
        "54058201ac7087911181bfec4af6091bb59380360f069276601256a76af08193",
    ),
    "rotary_embedding_torch": PinnedFile(
        "rotary-embedding-torch", "0.9.1", "rotary_embedding_torch-0.9.1-py3-none-any.whl",
        "489ef53e21ab4c4eb35c0c97b551d724f5eea71c2bca39acb8fee8d88b142a76",
    ),
}

MSST_FILES = ("bs_mamba2.py", "attend_mamba.py")


@dataclass(frozen=True)
class MsstSource:
    """MSST's bs_mamba2 code folder and where it came from."""

    folder: Path  # holds bs_mamba2.py and attend_mamba.py
    origin: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def network_reachable(host: str = "pypi.org", port: int = 443) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def download(pinned: PinnedFile, cache: Path) -> Path:
    """The pinned file in `cache`, fetched with pip (hash-checked) unless already there."""
    target = cache / pinned.filename
    if target.is_file() and sha256_of(target) == pinned.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{pinned.project}=={pinned.version} --hash=sha256:{pinned.sha256}\n")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
            "-r", str(requirements), "-d", str(Path(scratch) / "files"),
        ]
        env = dict(os.environ)
        if pinned.is_sdist:
            # pip reads an sdist's metadata by running its setup.py; mamba-ssm's would compile
            # CUDA code and its build requirements include torch: use this environment's torch
            # and skip the CUDA build (nothing is built, only metadata is read).
            command += ["--no-binary", ":all:", "--no-build-isolation"]
            env["MAMBA_SKIP_CUDA_BUILD"] = "TRUE"
        else:
            command += ["--only-binary", ":all:"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        fetched = Path(scratch) / "files" / pinned.filename
        if result.returncode != 0 or not fetched.is_file():
            output = (result.stdout + result.stderr)[-2000:]
            if not network_reachable():
                raise ReferenceUnavailable(
                    f"cannot download {pinned.filename} (PyPI unreachable, no network): {output}"
                )
            raise RuntimeError(f"`{' '.join(command)}` failed with PyPI reachable:\n{output}")
        if sha256_of(fetched) != pinned.sha256:
            raise RuntimeError(f"{pinned.filename}: sha256 {sha256_of(fetched)} != pinned {pinned.sha256}")
        os.replace(fetched, target)
    return target


def default_cache(pytest_cache_dir: Path | None) -> Path:
    """BSMAMBA2_REFERENCE_CACHE, else pytest's cache, else (cache plugin off) the temp folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    if pytest_cache_dir is not None:
        return pytest_cache_dir
    return Path(tempfile.gettempdir()) / "bsmamba2-msst-reference"


def installed_msst_source() -> MsstSource | None:
    """The installed msst package's folder, when it is the pinned version (never imported)."""
    try:
        version = importlib.metadata.version("msst")
        spec = importlib.util.find_spec("msst")
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        return None
    if version != MSST_WHEEL.version or spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "bs_mamba2_code"
    if all((folder / name).is_file() for name in MSST_FILES):
        return MsstSource(folder, f"installed msst {version} at {folder}")
    return None


def wheel_msst_source(cache: Path) -> MsstSource:
    """MSST's files read out of the pinned msst wheel (downloaded into `cache`)."""
    wheel = download(MSST_WHEEL, cache)
    folder = cache / f"msst-{MSST_WHEEL.version}-bs_mamba2_code"
    if not all((folder / name).is_file() for name in MSST_FILES):
        scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
        with zipfile.ZipFile(wheel) as archive:
            for name in MSST_FILES:
                (scratch / name).write_bytes(archive.read(f"msst/models/bs_mamba2_code/{name}"))
        replace_folder(scratch, folder)
    return MsstSource(folder, f"{MSST_WHEEL.filename} (sha256 {MSST_WHEEL.sha256[:12]}...)")


def checkout_msst_source() -> MsstSource | None:
    checkout = os.environ.get(MSST_CHECKOUT_ENV)
    if not checkout:
        return None
    folder = Path(checkout) / "models" / "bs_mamba2_code"
    missing = [name for name in MSST_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{MSST_CHECKOUT_ENV}={checkout}: {folder} lacks {', '.join(missing)}")
    return MsstSource(folder, f"MSST checkout {checkout}")


def msst_source(cache: Path) -> MsstSource:
    installed = installed_msst_source()
    if installed is not None:
        return installed
    try:
        return wheel_msst_source(cache)
    except ReferenceUnavailable:
        checkout = checkout_msst_source()
        if checkout is None:
            raise
        return checkout


def mamba_ssm_source(cache: Path) -> Path:
    """The folder holding mamba-ssm's `mamba_ssm/` Python sources of the pinned release."""
    root = cache / f"mamba_ssm-{MAMBA_SSM_SDIST.version}-src"
    if (root / "mamba_ssm" / "modules" / "mamba2.py").is_file():
        return root
    sdist = download(MAMBA_SSM_SDIST, cache)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    prefix = f"mamba_ssm-{MAMBA_SSM_SDIST.version}/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if m.isfile() and m.name.startswith(prefix + "mamba_ssm/") and m.name.endswith(".py")]
        for member in members:
            member.name = member.name[len(prefix):]
        if hasattr(tarfile, "data_filter"):
            archive.extractall(scratch, members=members, filter="data")
        else:  # Python without extraction filters: names were checked to stay under mamba_ssm/
            if any(".." in Path(m.name).parts for m in members):
                raise RuntimeError(f"{sdist}: unexpected member path")
            archive.extractall(scratch, members=members)
    replace_folder(scratch, root)
    return root


def pure_python_wheel(module: str, cache: Path) -> Path | None:
    """None when `module` is importable here, else the pinned wheel to put on sys.path."""
    if importlib.util.find_spec(module) is not None:
        return None
    return download(PURE_PYTHON_WHEELS[module], cache)


def replace_folder(source: Path, target: Path) -> None:
    """Move a finished folder into place; a concurrent run that got there first wins."""
    try:
        os.replace(source, target)
    except OSError:
        shutil.rmtree(source, ignore_errors=True)
        if not target.is_dir():
            raise
