"""sc.distributed.DataParallel on a LocalCluster of 2 worker processes.

Oracle: the one-process Program on the same cases. Every method over all the cases and
over an unsorted subset must agree to 1e-10 relative; a CP draw with the same seed must
be the same draw (noise indexed by the case's number in the batch, not in the shard);
Hessian-free, SGD and Adam driven through ``fit`` must follow the one-process trajectory;
a worker killed during ``grad`` and missing or corrupt shard files are checked last.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors

pytest.importorskip("distributed")

N = 61  # the cases bound in conftest.py's ``dp``
RTOL = 1e-10


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.abs(b).max()), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def test_every_method_equals_one_process(prog, dp, data, subset):
    rng = np.random.default_rng(1)
    theta, v = prog.init(0), rng.normal(size=prog.n_params)
    for cases, batch in ((None, data), subset):
        close(dp.loss(theta, cases), prog.loss(theta, batch))
        for a, b in zip(dp.grad(theta, cases), prog.grad(theta, batch)):
            close(a, b)
        both = zip(dp.grad_and_sum_sq_grad(theta, cases), prog.grad_and_sum_sq_grad(theta, batch))
        for a, b in both:
            close(a, b)
        close(dp.sum_sq_grad(theta, cases), prog.sum_sq_grad(theta, batch))
        close(dp.hvp(theta, v, cases=cases), prog.hvp(theta, batch, v))
        close(dp.gnvp(theta, v, 0.3, cases=cases), prog.gnvp(theta, batch, v, 0.3))
        close(dp.per_case_grad(theta, cases), prog.per_case_grad(theta, batch))
        for est in ("S", "HI"):
            want = prog.cp_diag(theta, batch, est, samples=2, seed=7)
            close(dp.cp_diag(theta, est, samples=2, seed=7, cases=cases), want)
    # an in-memory batch (fit's eval_data) is cut into parts and sent along
    close(dp.grad(theta, subset[1])[1], prog.grad(theta, subset[1])[1])
    # a program the build lacks is the Program's own error, raised through the worker
    with pytest.raises(errors.BuildError, match="program 'becker_lecun' was not built"):
        dp.becker_lecun_diag(theta)
    assert dp.n_cases == N and dp.n_shards == 3


def test_the_cluster_leaves_this_process_environment_alone(client, environ_before_client):
    """Dask's nanny writes one-thread OpenBLAS/MKL/OpenMP variables into the parent's
    os.environ before it spawns a worker; ``local_client`` puts them back (else a process
    started from this one would run a one-thread BLAS, and with it symcurv's own product
    kernels, whose sums differ in the last bits), while the workers keep theirs."""
    assert {k: os.environ.get(k) for k in environ_before_client} == environ_before_client
    per_worker = client.run(lambda: os.environ.get("OPENBLAS_NUM_THREADS"))
    assert len(per_worker) == 2 and set(per_worker.values()) == {"1"}


@pytest.mark.parametrize("scatter_bytes", [1 << 20, 0])  # 0: θ and v scattered, not sent
def test_state_stays_on_the_workers(prog, dp, subset, scatter_bytes, monkeypatch):
    from symcurv.distributed import data_parallel

    monkeypatch.setattr(data_parallel, "SCATTER_BYTES", scatter_bytes)
    theta = prog.init(1)
    v = np.random.default_rng(2).normal(size=prog.n_params)
    st, one = dp.linearize(theta, subset[0]), prog.linearize(theta, subset[1])
    close(st.loss(), one.loss())
    close(st.grad()[1], one.grad()[1])
    for _ in range(2):  # the second product reuses each worker's cached forward pass
        close(st.gnvp(v, 0.5), one.gnvp(v, 0.5))
        close(st.hvp(v), one.hvp(v))
    close(st.cp_diag(seed=3), one.cp_diag(seed=3))
    # the States live on the workers; only their results came to the client
    where = dp.client.who_has(st._states)
    assert all(len(w) == 1 for w in where.values())
    cached = dp.client.gather([dp.client.submit(lambda s: sorted(s._cache), f) for f in st._states])
    assert all("gnvp" in c and "hvp" in c for c in cached)


def test_cp_noise_is_indexed_by_the_global_case_number(prog, dp, data):
    theta = prog.init(0)
    want = prog.cp_diag(theta, data, seed=11)
    close(dp.cp_diag(theta, seed=11), want)
    # the check can fail: shards numbering their cases from 0 draw other noise
    local = sum(
        (b - a) / N * prog.cp_diag(theta, {k: x[a:b] for k, x in data.items()}, seed=11)
        for a, b in zip(dp.firsts[:-1], dp.firsts[1:])
    )
    assert not np.allclose(local, want, rtol=1e-6)
    # the seam itself: rows of the whole batch's noise, Rademacher and Gaussian
    from symcurv.runtime import noise

    rows = np.array([40, 3, 17, 0, 60])
    for kind in ("rademacher", "gaussian"):
        full = noise.draw_cpu((N, 131), np.float64, (5, 9), 1, 2, kind)
        np.testing.assert_array_equal(
            noise.draw_rows(rows, 131, np.float64, (5, 9), 1, 2, kind), full[rows]
        )


def test_workers_load_the_verified_build_without_sympy(prog, dp):
    dp.grad(prog.init(0))
    assert not any(dp.client.run(lambda: "sympy" in sys.modules).values())
    blob = pickle.dumps(prog)
    assert len(blob) < 2000 and b"kernels" not in blob  # a reference, not the modules
    assert pickle.loads(blob).manifest == prog.manifest
    from symcurv.runtime.build import from_build

    with pytest.raises(errors.BuildError, match="another build"):
        from_build(prog.build_dir, prog.backend, prog.dtype.name, "0" * 64)


def test_fit_follows_the_one_process_trajectory(prog, dp, data):
    opts = {"max_cg_iterations": 30}
    for make, batch_size in (
        (lambda p: sc.optim.HessianFree(p, **opts), 20),
        (lambda p: sc.optim.SGD(p, learning_rate=0.1), 16),
        (lambda p: sc.optim.Adam(p, learning_rate=0.05), 16),
    ):
        one = sc.optim.fit(prog, make(prog), data, 3, batch_size=batch_size, progress=False)
        many = sc.optim.fit(dp, make(dp), iterations=3, batch_size=batch_size, progress=False)
        close(many.column("objective"), one.column("objective"), rtol=1e-9)
        close(many.theta, one.theta, rtol=1e-8)


def test_checkpoint_resumes_after_the_client_restarts(prog, data, client, tmp_path):
    from distributed import Client

    path = tmp_path / "hf.npz"
    hf = lambda p: sc.optim.HessianFree(p, max_cg_iterations=20)  # noqa: E731
    with sc.distributed.DataParallel(prog, data, client=client) as dp:
        whole = sc.optim.fit(dp, hf(dp), iterations=4, batch_size=20, progress=False)
        sc.optim.fit(dp, hf(dp), iterations=2, batch_size=20, checkpoint=path, progress=False)
    with Client(client.scheduler.address) as again:  # a new client process would do the same
        with sc.distributed.DataParallel(prog, data, client=again) as dp2:
            kw = {"batch_size": 20, "checkpoint": path, "resume": True, "progress": False}
            resumed = sc.optim.fit(dp2, hf(dp2), iterations=4, **kw)
    np.testing.assert_array_equal(resumed.theta, whole.theta)


def test_shard_files(prog, data, client, tmp_path):
    files = []
    for i, (a, b) in enumerate(((0, 20), (20, 45), (45, N))):
        files.append(tmp_path / f"shard{i}.npz")
        np.savez(files[-1], **{k: v[a:b] for k, v in data.items()})
    theta = prog.init(2)
    with sc.distributed.DataParallel(prog, files, client=client) as dp:
        assert dp.n_cases == N
        close(dp.grad(theta)[1], prog.grad(theta, data)[1])
        close(dp.cp_diag(theta, seed=4), prog.cp_diag(theta, data, seed=4))
        # fit reads the cases from the files through the workers, as from scattered arrays
        hf = lambda p: sc.optim.HessianFree(p, max_cg_iterations=20)  # noqa: E731
        one = sc.optim.fit(prog, hf(prog), data, 2, batch_size=20, progress=False)
        many = sc.optim.fit(dp, hf(dp), iterations=2, batch_size=20, progress=False)
        close(many.theta, one.theta, rtol=1e-8)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    no_t = tmp_path / "no_t.npz"
    np.savez(no_t, x=data["x"][:5])
    for bad, match in (
        (tmp_path / "missing.npz", "missing.npz does not exist"),
        (corrupt, "corrupt.npz is corrupt"),
        (no_t, r"no_t.npz has no array\(s\) \['t'\]"),
    ):
        with pytest.raises(sc.distributed.ShardError, match=match):
            sc.distributed.DataParallel(prog, [files[0], bad], client=client)


def test_a_worker_killed_during_grad_changes_nothing(prog, client, make_data):
    big = make_data(200_000, seed=3)
    theta = prog.init(0)
    want = prog.grad(theta, big)
    pids = client.run(os.getpid)
    with sc.distributed.DataParallel(prog, big, client=client, n_shards=4) as dp:
        dp.grad(theta)  # warm: every worker has loaded the program
        killed = []

        done = threading.Event()

        def kill_a_busy_worker():
            while not done.is_set() and not killed:
                for addr, keys in client.processing().items():
                    if any("run" in str(k) for k in keys) and addr in pids:
                        os.kill(pids[addr], signal.SIGKILL)
                        killed.append(addr)
                        return
                time.sleep(0.001)

        for _ in range(5):  # until the killer catches a worker busy with grad
            done.clear()
            killer = threading.Thread(target=kill_a_busy_worker)
            killer.start()
            got = dp.grad(theta)
            done.set()
            killer.join()
            close(got[0], want[0])
            close(got[1], want[1])
            if killed:
                break
        assert killed, "no worker was busy with grad to be killed"
        assert dp.recovered >= 1  # its shards were scattered again and the call re-run
        close(dp.grad(theta)[1], want[1])  # and the next call runs on the restored shards
        # a State whose worker dies between two products is linearized again elsewhere
        v = np.random.default_rng(4).normal(size=prog.n_params)
        st = dp.linearize(theta)
        close(st.gnvp(v), prog.gnvp(theta, big, v))
        holder = next(iter(dp.client.who_has(st._states[:1]).values()))[0]
        before = dp.recovered
        os.kill(dp.client.run(os.getpid, workers=[holder])[holder], signal.SIGKILL)
        close(st.gnvp(v), prog.gnvp(theta, big, v))
        assert dp.recovered > before  # the shards (and States) on that worker were rebuilt
