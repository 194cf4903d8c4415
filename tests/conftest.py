"""Shared pytest setup.

Makes the helper modules in tests/ (``models``, ``oracle``) importable, and compiles each
tiny model of tests/models.py ONCE per session: Numba compile time dominates the suite.
"""

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
# a build whose compile workers fail raises instead of compiling serially in silence
# (runtime/compile_parallel.py): every build of the suite checks the workers' dry run
os.environ.setdefault("SYMCURV_COMPILE_STRICT", "1")


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="session")
def compiled(build_root):
    """``compiled(name) -> (model, Program)`` for the models of tests/models.py, float64."""
    import models

    import symcurv as sc

    cache = {}

    def get(name):
        if name not in cache:
            m = models.MODELS[name]()
            prog = sc.compile(
                m, programs=("loss", "grad"), build_dir=build_root / name, progress=False
            )
            cache[name] = (m, prog)
        return cache[name]

    return get
