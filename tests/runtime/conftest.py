"""Compiled programs shared by every runtime test: each model is built ONCE per session
(Numba compile time dominates the suite)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

import symcurv as sc  # noqa: E402


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="session")
def compiled(build_root):
    """name -> (model, Program) for every model in tests/models.py, float64."""
    cache = {}

    def get(name):
        if name not in cache:
            m = models.MODELS[name]()
            cache[name] = (
                m,
                sc.compile(
                    m, programs=("loss", "grad"), build_dir=build_root / name, progress=False
                ),
            )
        return cache[name]

    return get
