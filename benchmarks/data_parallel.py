"""sc.distributed.DataParallel against one process (issue 19's speed table).

    python benchmarks/data_parallel.py                    # autoencoder, B = 10 000
    python benchmarks/data_parallel.py --cases 2000 --quick
    python benchmarks/data_parallel.py --weak             # only the weak-scaling table
    MALLOC_ARENA_MAX=2 python benchmarks/data_parallel.py --big 3
                                                        # HF over 3 GB of shard files

Every BLAS and Numba pool in this process is pinned to ONE thread (as on the workers, see
symcurv/distributed/cluster.py), so that "one process" and "one worker" do the same
arithmetic on one core and their ratio is the distribution's overhead alone: scattering
nothing per call, sending θ (and v) to each shard, running the task, gathering and
combining the results. Then the same call over 2 workers (2 shards on 2 cores): the strong
scaling on this machine. Finally a few Hessian-free iterations over 2 shards, counting the
payload bytes each one sends to and receives from the workers (pickled task arguments and
results: what the network carries above Dask's own messages), and the weak scaling: the
same B per worker on 1 and on 2 workers.

``--big GB`` instead trains Hessian-free on GB of .npz shard files that the workers write
and load themselves, with this (client) process's address space capped below the data's
size (RLIMIT_AS, set after the cluster has started and the model is compiled): the client
could not even map the data, and it reports its own and the workers' peak resident memory.
The LocalCluster's scheduler runs inside the client process, so the cap covers it too.
Run it with ``MALLOC_ARENA_MAX=2``: glibc otherwise reserves 64 MB of address space per
thread that allocates (Dask's comm threads), which an address-space cap counts although
nothing is resident. The files are deleted afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

from symcurv.distributed.cluster import PINNED_THREADS  # noqa: E402

# before numpy loads OpenBLAS: this process computes on one thread, like each worker
os.environ.update(PINNED_THREADS)

import argparse  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(HERE.parent / "examples"))

import autoencoder  # noqa: E402
from common import blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402

PROGRAMS = ("loss", "grad", "gnvp", "sum_sq_grad")


def shutdown(client) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


class Counting:
    """Wraps a Client's submit, scatter and gather to add up the pickled bytes of every
    task's arguments and scattered array (sent, once per worker receiving it) and of every
    result (received)."""

    def __init__(self, client) -> None:
        self.client, self.sent, self.received, self.tasks = client, 0, 0, 0
        self._submit, self._gather, self._scatter = client.submit, client.gather, client.scatter
        client.submit, client.gather, client.scatter = self.submit, self.gather, self.scatter

    def scatter(self, data, *args, broadcast=False, **kwargs):
        copies = len(self.client.scheduler_info()["workers"]) if broadcast else 1
        self.sent += len(pickle.dumps(data, protocol=5)) * copies
        return self._scatter(data, *args, broadcast=broadcast, **kwargs)

    def submit(self, fn, *args, **kwargs):
        self.sent += len(pickle.dumps(args, protocol=5))
        self.tasks += 1
        return self._submit(fn, *args, **kwargs)

    def gather(self, futures, *args, **kwargs):
        out = self._gather(futures, *args, **kwargs)
        self.received += len(pickle.dumps(out, protocol=5))
        return out


def speed(prog, data, theta, v, rounds: int, block: int) -> tuple[list, dict]:
    """grad and a State's gnvp: one process, one worker, two workers (interleaved rounds)."""
    one_state = prog.linearize(theta, data)
    one_state.gnvp(v)
    fns = {"grad 1 process": lambda: prog.grad(theta, data)}
    fns["gnvp 1 process"] = lambda: one_state.gnvp(v)
    dps, clients = {}, []
    for workers in (1, 2):
        client = sc.distributed.local_client(workers)
        clients.append(client)
        dp = sc.distributed.DataParallel(prog, data, client=client, n_shards=workers)
        st = dp.linearize(theta)
        st.gnvp(v)
        dps[workers] = dp
        fns[f"grad {workers} worker"] = lambda dp=dp: dp.grad(theta)
        fns[f"gnvp {workers} worker"] = lambda st=st: st.gnvp(v)
    times = blocks(fns, rounds=rounds, block=block)
    for dp in dps.values():
        dp.close()
    for client in clients:
        shutdown(client)
    med = {k: float(np.median(t)) for k, t in times.items()}
    rows = []
    for call in ("grad", "gnvp"):
        base = np.array(times[f"{call} 1 process"])
        for workers in (1, 2):
            t = np.array(times[f"{call} {workers} worker"])
            rows.append(
                [
                    call,
                    workers,
                    ms(med[f"{call} 1 process"]),
                    ms(med[f"{call} {workers} worker"]),
                    f"{np.median(t / base):.3f}",
                ]
            )
    return rows, med


def fixed_cost(prog, theta, cases: int, rounds: int) -> list:
    """The per-call cost that does not grow with the batch: grad on a tiny shard through
    DataParallel (1 worker) minus the same call in this process, i.e. θ out, g back, the
    scheduling and the combine."""
    small = {"x": np.random.default_rng(1).uniform(size=(cases, 784))}
    client = sc.distributed.local_client(1)
    with sc.distributed.DataParallel(prog, small, client=client, n_shards=1) as dp:
        t = blocks({"one": lambda: prog.grad(theta, small), "dp": lambda: dp.grad(theta)}, rounds)
    shutdown(client)
    one, many = float(np.median(t["one"])), float(np.median(t["dp"]))
    return [cases, ms(one), ms(many), ms(many - one)]


def hf_bytes(prog, data, iterations: int, batch_size: int, max_cg: int) -> dict:
    """Payload bytes per Hessian-free iteration over 2 shards on 2 workers."""
    client = sc.distributed.local_client(2)
    with sc.distributed.DataParallel(prog, data, client=client, n_shards=2) as dp:
        counter = Counting(client)
        t = time.perf_counter()
        opt = sc.optim.HessianFree(dp, max_cg_iterations=max_cg)
        res = sc.optim.fit(dp, opt, iterations=iterations, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t
    shutdown(client)
    products = int(res.column("cg_iterations").sum())
    evaluations = int(res.column("loss_evaluations").sum())
    return {
        "iterations": iterations,
        "cg products": products,
        "loss evaluations": evaluations,
        "tasks": counter.tasks,
        "MB sent / iteration": counter.sent / iterations / 1e6,
        "MB received / iteration": counter.received / iterations / 1e6,
        "θ MB": prog.n_params * 8 / 1e6,
        "s / iteration": seconds / iterations,
    }


def weak(prog, per_worker: int, theta, v, rounds: int, block: int) -> list:
    """Weak scaling: ``per_worker`` cases on each worker, 1 worker against 2 (interleaved
    rounds); efficiency = t(1 worker) / t(2 workers), 1 when the second worker's shard
    costs nothing extra."""
    rng = np.random.default_rng(2)
    fns, handles = {}, []
    for workers in (1, 2):
        client = sc.distributed.local_client(workers)
        data = {"x": rng.uniform(size=(per_worker * workers, 784))}
        dp = sc.distributed.DataParallel(prog, data, client=client, n_shards=workers)
        st = dp.linearize(theta)
        st.gnvp(v)
        handles.append((dp, client))
        fns[f"grad {workers}"] = lambda dp=dp: dp.grad(theta)
        fns[f"gnvp {workers}"] = lambda st=st: st.gnvp(v)
    times = blocks(fns, rounds=rounds, block=block)
    for dp, client in handles:
        dp.close()
        shutdown(client)
    rows = []
    for call in ("grad", "gnvp"):
        t1, t2 = np.array(times[f"{call} 1"]), np.array(times[f"{call} 2"])
        rows.append(
            [
                call,
                per_worker,
                ms(float(np.median(t1))),
                ms(float(np.median(t2))),
                f"{np.median(t1 / t2):.3f}",
            ]
        )
    return rows


# -- --big: Hessian-free on more data than the client may hold ------------------------------
WIDTH = 784  # the autoencoder's input: 784 float64 numbers = 6272 bytes per case


def write_shard(path: str, n: int, seed: int) -> int:
    """Runs on a worker: ``n`` random cases written to the .npz file ``path`` (the data is
    made where it will be read, never on the client); returns its bytes."""
    x = np.random.default_rng(seed).uniform(size=(n, WIDTH))
    np.savez(path, x=x)
    return int(x.nbytes)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def address_space_mb() -> float:
    """This process's mapped virtual memory now (VmSize), which RLIMIT_AS caps."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize")) / 1024


def big(args) -> None:
    """Hessian-free over ``args.big`` GB of shard files on 2 workers, the client capped
    to ``args.client_limit`` GB of address space (module docstring)."""
    root = Path(tempfile.mkdtemp(prefix="symcurv_big_", dir=args.big_dir))
    client = sc.distributed.local_client(2)
    dp = None
    try:
        n_per = math.ceil(args.big * 1e9 / (WIDTH * 8) / args.big_shards)
        files = [str(root / f"shard{k:03d}.npz") for k in range(args.big_shards)]
        t = time.perf_counter()
        jobs = [client.submit(write_shard, f, n_per, k, pure=False) for k, f in enumerate(files)]
        nbytes = sum(client.gather(jobs))
        t_write = time.perf_counter() - t
        sizes = (784, args.big_hidden)
        build = Path(args.build_dir or root) / "big_build"
        prog = sc.compile(
            autoencoder.model(sizes), programs=PROGRAMS, build_dir=build, progress=False
        )
        before = address_space_mb()
        limit = int(args.client_limit * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        t = time.perf_counter()
        dp = sc.distributed.DataParallel(prog, files, client=client)
        t_bind = time.perf_counter() - t
        opt = sc.optim.HessianFree(dp, max_cg_iterations=args.big_cg)
        res = sc.optim.fit(
            dp, opt, iterations=args.big_iterations, batch_size=args.big_batch, progress=False
        )
        workers = sorted(client.run(peak_rss_mb).values())
        step = res.column("step_time")
        on_disk = sum(os.path.getsize(f) for f in files)
        print(f"# {machine()}")
        print(f"\nHessian-free over shard files: autoencoder {sizes[0]}-{sizes[1]}-{sizes[0]}")
        print(f"({prog.n_params} params), 2 workers, one thread each")
        rows = [
            ["cases", dp.n_cases],
            ["shards (files)", dp.n_shards],
            ["data in memory (GB)", f"{nbytes / 1e9:.2f}"],
            ["data on disk (GB)", f"{on_disk / 1e9:.2f}"],
            ["client address space before the cap (GB)", f"{before / 1e3:.2f}"],
            ["client address-space cap RLIMIT_AS (GB)", f"{limit / 1e9:.2f}"],
            ["client peak resident memory (GB)", f"{peak_rss_mb() / 1e3:.2f}"],
            ["worker peak resident memory (GB)", " / ".join(f"{w / 1e3:.2f}" for w in workers)],
            ["workers write the files (s)", f"{t_write:.1f}"],
            ["bind: workers load the files (s)", f"{t_bind:.1f}"],
            ["iterations", len(step)],
            ["curvature batch, max CG steps", f"{args.big_batch}, {args.big_cg}"],
            ["CG steps per iteration (mean)", f"{res.column('cg_iterations').mean():.1f}"],
            ["s per iteration (median)", f"{float(np.median(step)):.1f}"],
            [
                "objective first -> last",
                f"{res.history[0]['objective']:.3f} -> {res.history[-1]['objective']:.3f}",
            ],
        ]
        print(table(rows, ["quantity", "value"]))
    finally:
        if dp is not None:
            dp.close()
        shutdown(client)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build-dir", default=None, help="reuse this build directory")
    ap.add_argument("--hf-iterations", type=int, default=2)
    ap.add_argument("--weak", action="store_true", help="only the weak-scaling table")
    ap.add_argument("--big", type=float, default=None, help="GB of shard files: HF over them")
    ap.add_argument("--big-shards", type=int, default=32)
    ap.add_argument("--big-hidden", type=int, default=32, help="the code layer's width")
    ap.add_argument("--big-iterations", type=int, default=3)
    ap.add_argument("--big-batch", type=int, default=5000, help="curvature minibatch")
    ap.add_argument("--big-cg", type=int, default=20, help="max CG steps per iteration")
    ap.add_argument("--big-dir", default=None, help="where the shard files go (default /tmp)")
    ap.add_argument("--client-limit", type=float, default=2.0, help="client RLIMIT_AS, GB")
    args = ap.parse_args()
    if args.big is not None:
        big(args)
        return
    rounds, block = (3, 1) if args.quick else (5, 2)
    root = Path(args.build_dir or tempfile.mkdtemp(prefix="bench_distributed_"))
    t = time.perf_counter()
    prog = sc.compile(autoencoder.model(), programs=PROGRAMS, build_dir=root, progress=False)
    print(f"# {machine()}\n# build {time.perf_counter() - t:.1f} s, {prog.n_params} params")
    rng = np.random.default_rng(0)
    data = {"x": rng.uniform(size=(args.cases, 784))}
    theta, v = prog.init(0), rng.normal(size=prog.n_params)
    per_worker = args.cases // 2
    weak_header = ["call", "B per worker", "1 worker ms", "2 workers ms", "efficiency t1/t2"]
    weak_title = f"\nweak scaling: {per_worker} cases per worker, 1 -> 2 workers, {rounds} rounds"
    if args.weak:
        print(weak_title)
        print(table(weak(prog, per_worker, theta, v, rounds, block), weak_header))
        return
    rows, _ = speed(prog, data, theta, v, rounds, block)
    print(f"\nautoencoder, B = {args.cases}, one thread per process, median of {rounds} rounds")
    header = ["call", "workers", "1 process ms", "DataParallel ms", "ratio (median per round)"]
    print(table(rows, header))
    fixed = fixed_cost(prog, theta, 20, max(rounds, 5))
    print("\nfixed cost per grad call (1 worker):")
    print(table([fixed], ["B", "1 process ms", "DataParallel ms", "difference ms"]))
    hf = hf_bytes(prog, data, args.hf_iterations, min(1000, args.cases), max_cg=10)
    print("\nHessian-free over 2 shards (curvature batch 1000, at most 10 CG steps):")
    for k, val in hf.items():
        print(f"  {k}: {val:.3f}" if isinstance(val, float) else f"  {k}: {val}")
    print(weak_title)
    print(table(weak(prog, per_worker, theta, v, rounds, block), weak_header))


if __name__ == "__main__":
    main()
