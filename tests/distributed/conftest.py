"""Shared by the distributed tests: ONE LocalCluster of 2 worker processes per session,
and the small MLP compiled once (Numba compile time dominates) with every program the
tests drive through ``DataParallel``, bound in 3 shards to N cases."""

from __future__ import annotations

import os

import models
import numpy as np
import pytest

import symcurv as sc

pytest.importorskip("distributed")

#: ~7 s each to compile; "kfac" builds both K-FAC factor programs
PROGRAMS = ("loss", "grad", "hvp", "gnvp", "sum_sq_grad", "cp_S", "per_case_grad", "kfac")
N = 61


def random_data(n, seed=0):
    """n cases of the MLP's inputs: x ~ N(0, I), one-hot t."""
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 4)), "t": np.eye(2)[rng.integers(0, 2, n)]}


@pytest.fixture(scope="session")
def make_data():
    return random_data


@pytest.fixture(scope="session")
def prog(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return sc.compile(models.mlp((4, 3, 2)), programs=PROGRAMS, build_dir=root, progress=False)


@pytest.fixture(scope="session")
def environ_before_client():
    """This process's thread-count variables before the session's cluster starts."""
    return {k: os.environ.get(k) for k in sc.distributed.PINNED_THREADS}


@pytest.fixture(scope="session")
def client(environ_before_client):
    c = sc.distributed.local_client(2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="session")
def data():
    return random_data(N)


@pytest.fixture(scope="session")
def dp(prog, data, client):
    with sc.distributed.DataParallel(prog, data, client=client, n_shards=3) as dp:
        yield dp


@pytest.fixture(scope="session")
def subset(data):
    idx = np.random.default_rng(5).permutation(N)[:23]  # unsorted, spread over the shards
    return idx, {k: v[idx] for k, v in data.items()}
