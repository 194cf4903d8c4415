"""The embedded default: a ``dask.distributed.LocalCluster`` sized to this machine.

One worker process per core, each with ONE thread, and every thread pool a worker could
start pinned to one thread (DESIGN.md §5: on a 2-core machine, BLAS and Numba threads
fighting each other cost more than they gain). Parallelism comes from the processes: two
workers on two cores each run their shard's GEMMs on one core.
"""

from __future__ import annotations

import os

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
    (``client.close(); client.cluster.close()``)."""
    cluster = LocalCluster(
        n_workers=n_workers or cores(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=dict(PINNED_THREADS),
    )
    return Client(cluster)
