"""Shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import reference_sources


@pytest.fixture
def benchmark_module(monkeypatch: pytest.MonkeyPatch):
    """Imports a module of benchmarks/ by name, fresh, with that folder on sys.path for the test only."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))

    def load(name: str):
        monkeypatch.delitem(sys.modules, name, raising=False)
        return importlib.import_module(name)

    return load


@pytest.fixture(scope="session")
def reference(pytestconfig: pytest.Config):
    """mamba-ssm's and MSST's real Python sources, loaded on CPU (see reference_mamba.py)."""
    pytest_cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    cache = reference_sources.default_cache(
        None if pytest_cache is None else Path(pytest_cache.mkdir("bsmamba2-msst-reference")))
    try:
        mamba_root = reference_sources.mamba_ssm_source(cache)
        msst = reference_sources.msst_source(cache)
        wheels = [wheel for wheel in (reference_sources.pure_python_wheel(name, cache)
                                      for name in ("einops", "rotary_embedding_torch")) if wheel is not None]
    except reference_sources.ReferenceUnavailable as error:
        if os.environ.get(reference_sources.REQUIRE_ENV):
            pytest.fail(f"{reference_sources.REQUIRE_ENV} is set but the reference is unavailable: {error}")
        pytest.skip(f"MSST / mamba-ssm reference sources unavailable: {error}")
    import reference_mamba

    return reference_mamba.load_reference(mamba_root, msst, wheels)
