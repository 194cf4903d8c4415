"""Custom nonlinearities from sympy strings and lambdas: sympy derives f', f'', f'''.

A two-layer regression net with a softplus hidden layer, a Student-t-shaped
(heavy-tailed) second nonlinearity, a two-argument gated unit, and a custom robust loss.

    symcurv check examples/custom_nonlinearity.py
"""

import sympy

import symcurv as sc

softplus = sc.elementwise("softplus_str", "log(1 + exp(z))")
student_t = sc.elementwise("student_t", lambda z: sympy.log((sympy.exp(1.5) * z) ** 2 / 2 + 1))
gate = sc.elementwise("gate", "x*tanh(y)")  # two operands, alphabetical: x, y


def model(n_in=16, n_hidden=12, n_out=4):
    m = sc.Model("custom_nonlinearity")
    x = m.input("x", n_in)
    t = m.target("t", n_out)
    W1 = m.param("W1", (n_hidden, n_in), init=sc.init.normal(0.3))
    V1 = m.param("V1", (n_hidden, n_in), init=sc.init.normal(0.3))
    b1 = m.param("b1", n_hidden, init=sc.init.zeros())
    h = gate(softplus(W1 @ x + b1), V1 @ x)
    W2 = m.param("W2", (n_hidden, n_hidden), init=sc.init.glorot())
    h2 = student_t(W2 @ h)
    W3 = m.param("W3", (n_out, n_hidden), init=sc.init.normal(0.3))
    y = W3 @ h2
    m.minimize(sc.losses.custom("logcosh", "log(cosh(y - t))", y, t))
    return m
