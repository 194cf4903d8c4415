"""State and Program read alike: ``st.loss()`` is a call like ``st.grad()`` and
``prog.loss(θ, batch)``; the older property spelling ``st.loss`` still gives the number."""

from __future__ import annotations

import json

import numpy as np

from symcurv import testing
from symcurv.runtime.state import LossValue


def test_state_loss_is_called_like_grad_and_the_old_spelling_still_works(compiled):
    _, prog = compiled("mlp")
    theta, batch = prog.init(0), testing.random_batch(prog, 6, seed=1)
    want = prog.loss(theta, batch)
    st = prog.linearize(theta, batch)
    got = st.loss()  # the method form, as Program.loss and State.grad()
    assert type(got) is float and got == want
    old = st.loss  # the property form of earlier releases: a float
    assert isinstance(old, float) and old == want and float(old) == want
    assert old + 1.0 == want + 1.0 and f"{old:.6f}" == f"{want:.6f}"
    assert json.loads(json.dumps({"loss": old}))["loss"] == want
    assert np.isfinite(old) and repr(old) == repr(want)
    assert st.loss() == st.grad()[0]


def test_loss_value_is_a_plain_float_when_called():
    v = LossValue(2.5)
    assert v() == 2.5 and type(v()) is float and v * 2 == 5.0
