"""Tiny models shared by the runtime, CLI and golden tests (compiled once per session)."""

import sympy

import symcurv as sc


def mlp(sizes=(6, 4, 3)):
    """tanh MLP with softmax cross-entropy (a small cp_net)."""
    m = sc.Model("mlp")
    x = m.input("x", sizes[0])
    t = m.target("t", sizes[-1])
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.5))
        b = m.param(f"b{i}", n_out, init=sc.init.constant(0.1))
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.tanh(a)
    m.minimize(sc.losses.softmax_cross_entropy(h, t))
    return m


def branching():
    """One activation feeds two nodes; a two-argument custom op joins the branches."""
    gate = sc.elementwise("gate_xy", "x*tanh(y)")
    m = sc.Model("branching")
    x = m.input("x", 5)
    t = m.target("t", 3)
    W1 = m.param("W1", (4, 5), init=sc.init.normal(0.5))
    W2 = m.param("W2", (4, 4), init=sc.init.normal(0.5))
    W3 = m.param("W3", (4, 4), init=sc.init.normal(0.5))
    V = m.param("V", (3, 4), init=sc.init.normal(0.5))
    h = sc.logistic(W1 @ x)
    u = gate(W2 @ h, W3 @ h)
    m.minimize(sc.losses.squared_error(V @ (u + h * h), t))
    return m


def tied():
    """Autoencoder with tied weights: the decoder reuses W transposed."""
    m = sc.Model("tied")
    x = m.input("x", 6)
    W = m.param("W", (3, 6), init=sc.init.normal(0.5))
    b = m.param("b", 3, init=sc.init.zeros())
    c = m.param("c", 6, init=sc.init.zeros())
    code = sc.logistic(W @ x + b)
    m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
    return m


def all_ops():
    """Every built-in op and the custom loss in one graph."""
    student = sc.elementwise("student_t_test", lambda z: sympy.log(z**2 / 2 + 1))
    m = sc.Model("all_ops")
    x = m.input("x", 4)
    t = m.target("t", 4)
    W = m.param("W", (4, 4), init=sc.init.normal(0.4))
    U = m.param("U", (4, 4), init=sc.init.glorot())
    a = W @ x
    h = sc.softplus(a) + sc.relu(a) * 0.5 + sc.square(sc.tanh(a)) - sc.exp(-sc.square(a))
    h = h / (1 + sc.logistic(a)) + sc.log(1 + sc.exp(a)) ** 2 + student(a)
    s = sc.softmax(U @ h)
    extra = sc.logsumexp(h) + sc.dot(s, h) + sc.sum(h) * 0.1
    m.minimize(sc.losses.custom("logcosh_test", "log(cosh(y - t))", U @ s, t) + extra)
    return m


def shadowing():
    """DSL names that are also names in generated code (the batch size B, the loop indices,
    θ, a scratch slot, the cse temporaries t0, the modules): none may change the kernels."""
    m = sc.Model("shadowing")
    B = m.input("B", 4)
    theta = m.target("theta", 3)
    t0 = m.param("t0", (3, 4), init=sc.init.normal(0.5))
    vm = m.param("vm", 3, init=sc.init.constant(0.1))
    s0 = m.param("s0", (3, 3), init=sc.init.normal(0.5))
    i = sc.logistic(t0 @ B + vm)
    m.minimize(sc.losses.softmax_cross_entropy(s0 @ i + i, theta))
    return m


def mlp_labels(sizes=(6, 4, 3)):
    """``mlp`` with its target declared as class labels (the kernels read the labels).
    Not in MODELS: the full-sympy oracle of the graph-level tests has no one_hot."""
    m = sc.Model("mlp_labels")
    x = m.input("x", sizes[0])
    t = m.target("t", sizes[-1], labels=True)
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.5))
        b = m.param(f"b{i}", n_out, init=sc.init.constant(0.1))
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.tanh(a)
    m.minimize(sc.losses.softmax_cross_entropy(h, t))
    return m


MODELS = {
    "mlp": mlp,
    "branching": branching,
    "tied": tied,
    "all_ops": all_ops,
    "shadowing": shadowing,
}
