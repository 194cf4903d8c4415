"""The training loop: the sampler, the history, checkpoints written atomically, resuming
exactly (every optimizer on the numpy stand-in; HF on the compiled autoencoder), the
progress bar, the callback and argument checking."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from symcurv import errors
from symcurv.optim import SGD, Adam, FitResult, HessianFree, OptimizerError, Sampler, fit

TIMES = ("time", "step_time")


def without_times(history):
    return [{k: v for k, v in row.items() if k not in TIMES} for row in history]


def same_rows(a, b) -> bool:
    """Row by row equal, NaN equal to NaN (ρ can be NaN)."""
    a, b = without_times(a), without_times(b)
    return len(a) == len(b) and all(
        r.keys() == s.keys() and all(r[k] == s[k] or (r[k] != r[k] and s[k] != s[k]) for k in r)
        for r, s in zip(a, b)
    )


# -- the sampler ----------------------------------------------------------------------------------
def test_sampler_epochs_visit_every_case_once():
    X = np.arange(12.0)[:, None]
    s = Sampler({"x": X}, 4, seed=0)
    epoch = np.concatenate([s.minibatch()["x"][:, 0] for _ in range(3)])
    assert sorted(epoch) == list(X[:, 0])
    nxt = np.concatenate([s.minibatch()["x"][:, 0] for _ in range(3)])
    assert sorted(nxt) == list(X[:, 0]) and not np.array_equal(nxt, epoch)  # reshuffled
    # rows of every key stay together
    s2 = Sampler({"x": X, "t": 10 * X}, 5, seed=1)
    b = s2.minibatch()
    assert np.array_equal(b["t"], 10 * b["x"])
    assert s2.minibatch(100)["x"] is s2.data["x"] and s2.full() is s2.data


def test_sampler_state_restores_the_sequence():
    X = np.arange(30.0)[:, None]
    s = Sampler({"x": X}, 7, seed=3)
    for _ in range(5):
        s.minibatch()
    meta, order = s.state()
    meta = json.loads(json.dumps(meta))  # as a checkpoint stores it
    want = [s.minibatch()["x"] for _ in range(6)]
    fresh = Sampler({"x": X}, 7, seed=99)
    fresh.restore(meta, order)
    assert all(np.array_equal(fresh.minibatch()["x"], w) for w in want)


@pytest.mark.parametrize(
    "data, word",
    [
        ({"x": np.zeros((4, 2)), "t": np.zeros((5, 1))}, "different numbers of rows"),
        ({}, "non-empty dict"),
        ([np.zeros((4, 2))], "non-empty dict"),
        ({"x": np.zeros((0, 2))}, "no cases"),
    ],
)
def test_sampler_refuses_bad_data(data, word):
    with pytest.raises(errors.BatchError, match=word):
        Sampler(data, 2)


# -- history ---------------------------------------------------------------------------------------
def test_history_rows(ls):
    n = 4
    prog, data, test = ls.Program(n), ls.data(n, seed=6), ls.data(n, seed=7)
    theta0 = np.ones(n)
    res = fit(
        prog,
        SGD(prog),
        data,
        5,
        theta0,
        batch_size=20,
        eval_data=test,
        eval_every=2,
        progress=False,
    )
    assert [row["iteration"] for row in res.history] == [1, 2, 3, 4, 5]
    assert np.array_equal(theta0, np.ones(n))  # the caller's θ is never written into
    assert {"objective", "grad_norm", "time", "step_time"} <= res.history[0].keys()
    times = res.column("time")
    assert np.all(np.diff(times) > 0) and times[-1] == pytest.approx(res.column("step_time").sum())
    assert [r["iteration"] for r in res.history if "test_objective" in r] == [2, 4, 5]
    assert res.history[-1]["test_objective"] == prog.loss(res.theta, test)
    assert math.isnan(res.column("test_objective")[0])
    # no θ given: the program's initialiser with fit's seed
    res0 = fit(prog, SGD(prog), data, 0, seed=5, progress=False)
    assert np.array_equal(res0.theta, prog.init(5)) and res0.history == []


def test_save_history_as_json_and_csv(ls, tmp_path):
    n = 4
    prog, data = ls.Program(n, curvature_scale=0.3), ls.data(n)
    res = fit(prog, HessianFree(prog, initial_damping=1e-3), data, 6, progress=False)
    assert any(r["rho"] == -math.inf for r in res.history)  # a non-finite value to write
    rows = json.loads(open(res.save_history(tmp_path / "h.json")).read())
    assert len(rows) == 6
    for row, want in zip(rows, res.history):
        for k, v in want.items():
            assert row[k] == (v if not isinstance(v, float) or math.isfinite(v) else None)
    with open(res.save_history(tmp_path / "h.csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(res.history[0])
    for row, want in zip(table, res.history):
        assert float(row["objective"]) == want["objective"]  # repr round-trips exactly
        assert row["cg_stop"] == want["cg_stop"] and float(row["rho"]) == float(want["rho"])
    with pytest.raises(OptimizerError, match="json or .csv"):
        res.save_history(tmp_path / "h.txt")
    assert sorted(os.listdir(tmp_path)) == ["h.csv", "h.json"]  # no temporary files left


# -- checkpoints and resuming ----------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda p: SGD(p, learning_rate=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: Adam(p, learning_rate=0.05),
    "hf": lambda p: HessianFree(p, initial_damping=1.0, gradient_batch_size=40),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_resumed_run_matches_an_uninterrupted_one(ls, tmp_path, name):
    n = 6
    prog, data = ls.Program(n), ls.data(n, cases=90, seed=8)
    kw = {"batch_size": 25, "seed": 4, "progress": False}
    whole = fit(prog, OPTIMIZERS[name](prog), data, 10, **kw)
    path = tmp_path / "run.ckpt"
    # a run stopped after 4 iterations (by its callback, as a crash would stop it) ...
    first = fit(
        prog,
        OPTIMIZERS[name](prog),
        data,
        10,
        checkpoint=path,
        callback=lambda it, theta, row: it < 4,
        **kw,
    )
    assert len(first.history) == 4
    # ... continued by a new process: fresh objects, everything from the file
    rest = fit(prog, OPTIMIZERS[name](prog), data, 10, checkpoint=path, resume=True, **kw)
    assert np.array_equal(rest.theta, whole.theta)
    assert same_rows(rest.history, whole.history)
    assert rest.history[4]["time"] >= first.history[-1]["time"]  # the clock continues
    # resuming a finished run does nothing more
    again = fit(prog, OPTIMIZERS[name](prog), data, 10, checkpoint=path, resume=True, **kw)
    assert np.array_equal(again.theta, whole.theta) and len(again.history) == 10


def test_resumed_hf_on_the_compiled_autoencoder(autoencoder, tmp_path):
    prog, train = autoencoder.prog, autoencoder.train
    kw = {"batch_size": 100, "seed": 1, "progress": False}
    whole = fit(prog, HessianFree(prog), train, 6, **kw)
    path = tmp_path / "ae.ckpt"
    fit(prog, HessianFree(prog), train, 3, checkpoint=path, **kw)
    rest = fit(prog, HessianFree(prog), train, 6, checkpoint=path, resume=True, **kw)
    assert np.array_equal(rest.theta, whole.theta)
    assert same_rows(rest.history, whole.history)
    assert whole.history[-1]["objective"] < whole.history[0]["objective"]


def test_checkpoint_is_replaced_atomically(ls, tmp_path, monkeypatch):
    n = 4
    prog, data = ls.Program(n), ls.data(n)
    path = tmp_path / "run.ckpt"
    fit(prog, SGD(prog), data, 3, checkpoint=path, progress=False)
    before = path.read_bytes()
    real = np.savez

    def crash(f, **arrays):  # half a file, then the process "dies"
        real(f, **arrays)
        f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(prog, SGD(prog), data, 6, checkpoint=path, resume=True, progress=False)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["run.ckpt"]
    res = fit(prog, SGD(prog), data, 6, checkpoint=path, resume=True, progress=False)
    assert len(res.history) == 6


def test_resume_refuses_a_checkpoint_of_another_run(ls, tmp_path):
    n = 4
    prog, data = ls.Program(n), ls.data(n)
    path = tmp_path / "run.ckpt"
    fit(prog, SGD(prog), data, 2, checkpoint=path, progress=False)
    with pytest.raises(OptimizerError, match="optimizer 'SGD' there, 'Adam' here"):
        fit(prog, Adam(prog), data, 4, checkpoint=path, resume=True, progress=False)
    other = ls.Program(n + 1)
    with pytest.raises(OptimizerError, match="n_params"):
        fit(other, SGD(other), ls.data(n + 1), 4, checkpoint=path, resume=True, progress=False)
    with pytest.warns(UserWarning, match="different optimizer options"):
        fit(prog, SGD(prog, momentum=0.5), data, 4, checkpoint=path, resume=True, progress=False)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OptimizerError, match="cannot read checkpoint"):
        fit(prog, SGD(prog), data, 4, checkpoint=path, resume=True, progress=False)
    # without resume=True an existing file is simply overwritten by a fresh run
    res = fit(prog, SGD(prog), data, 2, checkpoint=path, progress=False)
    assert len(res.history) == 2 and path.stat().st_size > 100


# -- progress, callback, arguments -----------------------------------------------------------------
def test_progress_bar_on_stderr_only_when_asked(ls, capsys):
    n = 4
    prog, data = ls.Program(n), ls.data(n)
    fit(prog, SGD(prog), data, 5, progress=True)
    out = capsys.readouterr()
    # tqdm's bar: label, percentage, count, the history fields
    assert out.out == "" and "SGD: 100%|" in out.err and "| 5/5 [" in out.err
    assert "objective=" in out.err and out.err.endswith("\n")
    fit(prog, SGD(prog), data, 5, progress=False)
    assert capsys.readouterr().err == ""


def test_callback_sees_each_iteration_and_can_stop(ls):
    n = 4
    prog, data = ls.Program(n), ls.data(n)
    seen = []

    def callback(it, theta, row):
        seen.append((it, row["objective"], theta.copy()))
        return None if it < 3 else False

    res = fit(prog, SGD(prog), data, 10, callback=callback, progress=False)
    assert [s[0] for s in seen] == [1, 2, 3] and len(res.history) == 3
    assert np.array_equal(seen[-1][2], res.theta)


def test_bad_arguments(ls):
    n = 4
    prog, data = ls.Program(n), ls.data(n)
    with pytest.raises(OptimizerError, match="iterations"):
        fit(prog, SGD(prog), data, -1, progress=False)
    with pytest.raises(OptimizerError, match="an optimizer with"):
        fit(prog, object(), data, 1, progress=False)
    other = ls.Program(n + 2)
    with pytest.raises(OptimizerError, match="parameters"):
        fit(prog, SGD(other), data, 1, progress=False)
    with pytest.raises(OptimizerError, match="batch_size"):
        fit(prog, SGD(prog), data, 1, batch_size=0, progress=False)
    with pytest.raises(errors.BatchError, match="theta has shape"):
        fit(prog, SGD(prog), data, 1, np.zeros(n + 1), progress=False)
    with pytest.raises(errors.NonFiniteError):
        fit(prog, SGD(prog), data, 1, np.full(n, np.nan), progress=False)
    assert isinstance(fit(prog, SGD(prog), data, 1, progress=False), FitResult)
