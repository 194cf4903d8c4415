"""examples/hf_autoencoders.py: the error model measures what Table 2 reports, on the same
parameters as the trained model (graph level: nothing is compiled)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from symcurv.runtime.reference import evaluate

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "_symcurv_example_hf", ROOT / "examples" / "hf_autoencoders.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hf = _load()


def _forward_by_hand(params: dict, x: np.ndarray, sizes) -> np.ndarray:
    """The mirrored autoencoder in numpy: logistic hidden units, linear code and output."""
    n_layers = 2 * (len(sizes) - 1)
    h = x
    for i in range(n_layers):
        a = h @ params[f"W{i}"].T + params[f"b{i}"]
        h = a if i in (len(sizes) - 2, n_layers - 1) else 1 / (1 + np.exp(-a))
    return h


@pytest.mark.parametrize("dataset", ["curves", "faces"])
def test_error_is_the_average_sum_of_squared_reconstruction_errors(dataset, monkeypatch):
    small = {"curves": (12, 6, 4, 2), "faces": (10, 5, 3)}[dataset]
    monkeypatch.setitem(hf.ARCH, dataset, small)
    train, err = hf.autoencoder(dataset), hf.autoencoder(dataset, error=True)
    assert {k: v["shape"] for k, v in train.params.items()} == {
        k: v["shape"] for k, v in err.params.items()
    }
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=v["shape"]) for k, v in train.params.items()}
    x = rng.uniform(0, 1, size=(5, small[0]))
    logits = _forward_by_hand(params, x, small)
    recon = 1 / (1 + np.exp(-logits)) if dataset == "curves" else logits
    want = np.mean(np.sum((recon - x) ** 2, axis=1))  # Table 2's measure
    g = err.forward_graph()
    got = 2 * float(np.ravel(evaluate(g, {**params, "x": x})["objective"])[0])
    assert got == pytest.approx(want, rel=1e-12)


def test_standardise_uses_training_statistics():
    rng = np.random.default_rng(1)
    train, test = rng.uniform(size=(40, 6)) * [1, 2, 3, 4, 5, 6], rng.uniform(size=(9, 6))
    s_train, s_test = hf.standardise(train, test)
    assert np.allclose(s_train.mean(axis=0), 0) and np.isclose((s_train**2).mean(), 1)
    scale = np.sqrt(((train - train.mean(0)) ** 2).mean())
    assert np.allclose(s_test, (test - train.mean(0)) / scale)


def test_equal_time_rows():
    rows = [dict(time=t, train=10 - t) for t in (0.0, 50.0, 100.0, 150.0, 900.5)]
    assert hf.at_time(rows, 900.0)["time"] == 900.5  # a step past the shared budget
    assert hf.at_time(rows, 120.0)["time"] == 100.0
