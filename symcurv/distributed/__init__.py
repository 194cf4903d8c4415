"""Scale-out on Dask: a Program's methods over data held by ``dask.distributed`` workers.

``sc.distributed.DataParallel(prog, data, client=None, n_shards=None)`` binds the data (a
dict of arrays scattered once, or ``.npz`` shard files each worker loads) and offers the
Program's methods over it; ``sc.optim.fit(dp, opt)`` trains on it. See docs/distributed.md.
"""

from symcurv.distributed.cases import Cases, ShardSampler
from symcurv.distributed.cluster import PINNED_THREADS, local_client
from symcurv.distributed.data_parallel import DataParallel
from symcurv.distributed.shards import ShardError
from symcurv.distributed.state import DistributedState

__all__ = [
    "Cases",
    "DataParallel",
    "DistributedState",
    "PINNED_THREADS",
    "ShardError",
    "ShardSampler",
    "local_client",
]
