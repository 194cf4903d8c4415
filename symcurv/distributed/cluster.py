"""The embedded default: a ``dask.distributed.LocalCluster`` sized to this machine.

One worker process per core, each with ONE thread, and every thread pool a worker could
start pinned to one thread (DESIGN.md §5: on a 2-core machine, BLAS and Numba threads
fighting each other cost more than they gain). Parallelism comes from the processes: two
workers on two cores each run their shard's GEMMs on one core.
"""

from __future__ import annotations

import os

import dask
from distributed import Client, LocalCluster

#: environment of every worker process: one thread for OpenBLAS/MKL/OpenMP and for Numba
PINNED_THREADS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "NUMBA_THREADING_LAYER": "workqueue",
}


def cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def local_client(n_workers: int | None = None):
    """A Client on a new LocalCluster of ``n_workers`` (default: the cores) single-threaded
    worker processes with pinned thread pools, no dashboard. The caller closes both
    (``client.close(); client.cluster.close()``).

    Dask's nanny writes its pre-spawn environment (one-thread OpenBLAS, MKL and OpenMP)
    into this process's ``os.environ`` before it spawns a worker, and leaves it there: a
    process started from this one afterwards would run a one-thread BLAS, and with it
    symcurv's own product kernels instead of the BLAS (runtime/gemm.py), which sum in
    another order (found in session 17: a fresh process's gradient then differed in the
    last bits from this one's). Those variables are put back once the workers run; a
    worker the nanny restarts writes them again until the cluster closes."""
    keys = set(PINNED_THREADS) | set(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    saved = {k: os.environ.get(k) for k in keys}
    n_workers = n_workers or cores()
    try:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=dict(PINNED_THREADS),
        )
        client = Client(cluster)
        client.wait_for_workers(n_workers)  # every worker spawned: no write comes later
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return client
