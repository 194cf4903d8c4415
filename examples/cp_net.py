"""The 256-20-20-20-10 tanh network of the Curvature Propagation paper (§8.1).

symcurv check examples/cp_net.py
symcurv graph examples/cp_net.py --program grad -o grad.svg
"""

import symcurv as sc


def model(sizes=(256, 20, 20, 20, 10)):
    m = sc.Model("cp_net")
    x = m.input("x", sizes[0])
    t = m.target("t", sizes[-1])
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.1))
        b = m.param(f"b{i}", n_out, init=sc.init.zeros())
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.tanh(a)
    m.minimize(sc.losses.softmax_cross_entropy(h, t))
    return m


def small():
    """A tiny version for quick checks and tests."""
    return model((6, 4, 3))
