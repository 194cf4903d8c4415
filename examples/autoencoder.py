"""The deep autoencoder of Hinton & Salakhutdinov (2006), as used by Martens (2010):
784-1000-500-250-30-250-500-1000-784, logistic hidden units, a linear 30-unit code,
sigmoid cross-entropy between the reconstruction's logits and the input.

    symcurv build examples/autoencoder.py -o build/ae
"""

import symcurv as sc

SIZES = (784, 1000, 500, 250, 30)


def model(sizes=SIZES, name="autoencoder"):
    m = sc.Model(name)
    x = m.input("x", sizes[0])
    encoder = list(zip(sizes, sizes[1:]))
    layers = encoder + [(b, a) for a, b in reversed(encoder)]
    h = x
    code_layer = len(sizes) - 2
    for i, (n_in, n_out) in enumerate(layers):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.sparse(15))
        b = m.param(f"b{i}", n_out, init=sc.init.zeros())
        a = W @ h + b
        last = i == len(layers) - 1
        h = a if (i == code_layer or last) else sc.logistic(a)
    m.minimize(sc.losses.sigmoid_cross_entropy(h, x))
    return m


def small():
    """A 12-6-3 autoencoder of the same shape, for tests and quick checks."""
    return model((12, 6, 3), name="autoencoder_small")


def tied(sizes=(12, 6, 3)):
    """Tied weights: the decoder reuses each encoder matrix transposed (W.T)."""
    m = sc.Model("tied_autoencoder")
    x = m.input("x", sizes[0])
    Ws, h = [], x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.1))
        b = m.param(f"b{i}", n_out, init=sc.init.zeros())
        Ws.append(W)
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.logistic(a)
    for i, W in enumerate(reversed(Ws)):
        c = m.param(f"c{i}", W.shape[1], init=sc.init.zeros())
        a = W.T @ h + c
        h = a if i == len(Ws) - 1 else sc.logistic(a)
    m.minimize(sc.losses.sigmoid_cross_entropy(h, x))
    return m
