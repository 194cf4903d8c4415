"""Class labels: ``m.target("t", K, labels=True)`` takes integer labels of shape (B,) and
gives exactly the one-hot results; wrong labels and wrong uses are clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors, testing


def mlp_labels(sizes=(6, 4, 3), labels=True):
    """tests/models.py's mlp with the target declared as class labels (same parameters)."""
    m = sc.Model("mlp_labels")
    x = m.input("x", sizes[0])
    t = m.target("t", sizes[-1], labels=labels)
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.5))
        b = m.param(f"b{i}", n_out, init=sc.init.constant(0.1))
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.tanh(a)
    m.minimize(sc.losses.softmax_cross_entropy(h, t))
    return m


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    return sc.compile(
        mlp_labels(),
        programs=("loss", "grad", "hvp", "cp_diag", "per_case_grad", "input_grad"),
        build_dir=tmp_path_factory.mktemp("labels") / "mlp_labels",
        progress=False,
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 6))
    labels = rng.integers(0, 3, size=9)
    return x, labels


def test_labels_equal_the_one_hot_results(prog, compiled, data):
    _, onehot = compiled("mlp")  # the same network, one-hot targets
    x, labels = data
    theta = prog.init(1)
    assert prog.n_params == onehot.n_params
    want_loss, want_g = onehot.grad(theta, {"x": x, "t": np.eye(3)[labels]})
    for lab in (labels, labels.astype(np.int32), labels.astype(np.float64)):
        loss, g = prog.grad(theta, {"x": x, "t": lab})
        assert abs(loss - want_loss) <= 1e-13 * abs(want_loss)
        assert testing.rel_error(g, want_g) < 1e-13
    assert abs(prog.loss(theta, {"x": x, "t": labels}) - want_loss) <= 1e-13 * abs(want_loss)
    st = prog.linearize(theta, {"x": x, "t": labels})
    assert abs(st.loss() - want_loss) <= 1e-13 * abs(want_loss)
    assert testing.rel_error(st.grad()[1], want_g) < 1e-13
    # a label changes the answer (the labels are read, not ignored)
    other = (labels + 1) % 3
    assert abs(prog.loss(theta, {"x": x, "t": other}) - want_loss) > 1e-3


def test_hvp_with_labels_matches_differences_of_the_gradient(prog, data):
    x, labels = data
    batch = {"x": x, "t": labels}
    theta = prog.init(2)
    v = np.random.default_rng(3).normal(size=prog.n_params)
    eps = 1e-5
    fd = (prog.grad(theta + eps * v, batch)[1] - prog.grad(theta - eps * v, batch)[1]) / (2 * eps)
    assert testing.rel_error(prog.hvp(theta, batch, v), fd) < 1e-7
    errs = testing.compare_to_reference(prog, theta, batch)  # random_batch-free: our labels
    assert max(errs.values()) < 1e-12, errs


def test_kernels_read_the_labels_not_one_hot_rows(prog, data, monkeypatch):
    """The kernels receive the B labels (a (B, 1) column viewing a (B,) array), never a
    B × K one-hot array; every built program reading them (the CP sweep's noise included)
    equals the reference interpreter, whose one_hot is numpy's B × K rows."""
    x, labels = data
    B = len(labels)
    seen = {}
    hvp_part = prog.spec("hvp").get("whole", "hvp.static")  # a direct call's first driver
    parts = ("grad", hvp_part, "cp_S.static", "per_case_grad")
    for name in parts:
        module, spec = prog._modules[name], prog.manifest["programs"][name]
        at = 1 + len(spec.get("vectors", [])) + spec["leaves"].index("t")

        def record(*args, _run=module.run, _name=name, _at=at):
            seen[_name] = args[_at]
            return _run(*args)

        monkeypatch.setattr(module, "run", record)
    theta, v = prog.init(4), np.random.default_rng(5).normal(size=prog.n_params)
    batch = {"x": x, "t": labels}
    prog.grad(theta, batch)
    prog.hvp(theta, batch, v)
    prog.cp_diag(theta, batch, seed=1)
    pcg = prog.per_case_grad(theta, batch)
    assert sorted(seen) == sorted(parts)
    for name, t in seen.items():
        assert t.size == B and t.shape == (B, 1), (name, t.shape)
        assert np.array_equal(t[:, 0], labels), name
    # the generated source reads the label and forms [t = j] in the fused loop (the
    # kernels' own files, kernels/shared/, name the label's argument a<i>)
    src = "".join(p.read_text() for p in Path(prog.build_dir, "kernels", "shared").glob("*.py"))
    assert re.search(r"\(j == a\d+\)", src)
    assert testing.rel_error(pcg.mean(0), prog.grad(theta, batch)[1]) < 1e-13
    errs = testing.compare_to_reference(prog, theta, batch)
    assert set(errs) >= {"cp_S", "per_case_grad", "input_grad"} and max(errs.values()) < 1e-12, errs


def test_manifest_and_random_batch_know_the_labels(prog):
    assert prog.inputs["t"]["labels"] is True and "labels" not in prog.inputs["x"]
    b = testing.random_batch(prog, 5)
    assert b["t"].shape == (5,) and np.issubdtype(b["t"].dtype, np.integer)
    prog.loss(prog.init(0), b)


@pytest.mark.parametrize(
    "t, match",
    [
        (np.array([0, 1, 3, 0, 1, 2, 0, 1, 2]), r"batch\['t'\]\[2\] = 3 is not a class label"),
        (np.array([0, -1, 2, 0, 1, 2, 0, 1, 2]), r"\[1\] = -1 is not a class label"),
        (np.array([0, 1.5, 2, 0, 1, 2, 0, 1, 2]), r"\[1\] = 1.5 is not an integer"),
        (np.array([0, np.nan, 2, 0, 1, 2, 0, 1, 2]), r"\[1\] = nan is not an integer"),
        (np.array(["a"] * 9), "class labels are integers"),
        (np.ones(9, dtype=bool), "class labels are integers"),
        (np.eye(3)[np.arange(9) % 3], r"declared with labels=True.*shape \(B,\)"),
        (np.zeros((9, 1), dtype=int), r"expected class labels of shape \(B,\)"),
    ],
)
def test_bad_labels_are_batch_errors(prog, data, t, match):
    x, _ = data
    with pytest.raises(errors.BatchError, match=match) as e:
        prog.loss(prog.init(0), {"x": x, "t": t})
    assert "test_labels.py" in str(e.value)  # names the DSL line of the target


def test_labels_only_feed_softmax_cross_entropy():
    for loss in (sc.losses.squared_error, sc.losses.sigmoid_cross_entropy):
        m = sc.Model("bad")
        x, t = m.input("x", 3), m.target("t", 3, labels=True)
        W = m.param("W", (3, 3))
        m.minimize(loss(W @ x, t))
        with pytest.raises(errors.ModelError, match="labels=True targets can only") as e:
            m.forward_graph()
        assert "test_labels.py" in str(e.value) and "fix" in str(e.value).lower()
    m = sc.Model("bad2")
    x, t = m.input("x", 3), m.target("t", 3, labels=True)
    W = m.param("W", (3, 3))
    m.minimize(sc.losses.softmax_cross_entropy(W @ x, t * 2.0))
    with pytest.raises(errors.ModelError, match="class-label target 't'"):
        m.forward_graph()


def test_labels_change_the_ir_hash():
    """A cached build of the one-hot model is never reused for the labels model: the same
    model text (same names and DSL lines) hashes differently with labels=True."""
    a, b = mlp_labels(labels=False).forward_graph(), mlp_labels().forward_graph()
    assert [n.attr("labels") for n in b.nodes() if n.op == "target"] == [True]
    assert a.digest() != b.digest()


def test_fit_trains_on_labels(prog, data):
    """Minibatches of labels (B,) flow through sc.optim.fit like any other key."""
    x, labels = data
    res = sc.optim.fit(
        prog,
        sc.optim.SGD(prog, learning_rate=0.3),
        {"x": x, "t": labels},
        30,
        batch_size=3,
        seed=0,
        progress=False,
    )
    full = {"x": x, "t": labels}
    assert prog.loss(res.theta, full) < 0.7 * prog.loss(prog.init(0), full)


def test_input_grad_with_labels_and_never_with_respect_to_them(prog, data):
    """∂f_b/∂x_b with a labels target equals differences of the per-case loss; wrt may
    not name the labels (a target)."""
    x, labels = data
    theta = prog.init(6)
    g = prog.input_grad(theta, {"x": x, "t": labels})
    assert g.shape == x.shape
    e, eps = np.zeros_like(x), 1e-6
    e[:, 2] = eps
    B = len(labels)
    fd = (
        (prog.loss(theta, {"x": x + e, "t": labels}) - prog.loss(theta, {"x": x - e, "t": labels}))
        * B
        / (2 * eps)
    )  # Σ_b ∂f_b/∂x_b2: the mean loss times B, moved in column 2
    assert abs(fd - g[:, 2].sum()) < 1e-7 * max(1.0, abs(fd))
    with pytest.raises(errors.ModelError, match="is a target"):
        prog.input_grad(theta, {"x": x, "t": labels}, wrt="t")
