"""examples/hf_autoencoders.py: the error model measures what Table 2 reports, on the same
parameters as the trained model (graph level: nothing is compiled)."""

from __future__ import annotations

from pathlib import Path

import example_modules
import numpy as np
import pytest

from symcurv.runtime.reference import evaluate

ROOT = Path(__file__).resolve().parents[2]


hf = example_modules.load("hf_autoencoders")


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


def _fake_runs(monkeypatch, final_by_rate: dict):
    """Replace training by a table: rate -> final training error (None: diverged)."""
    tried = []

    def run(method, prog, err, data, budget, every, opts, batch):
        lr = opts["learning_rate"]
        tried.append(lr)
        final = final_by_rate[round(lr, 12)]
        if final is None:
            return dict(status="diverged: fake", errors=[])
        return dict(status="ok", errors=[dict(time=budget, train=final, test=final)])

    monkeypatch.setattr(hf, "run", run)
    return tried


def test_tuning_extends_the_grid_downwards_until_the_winner_is_interior(monkeypatch):
    rates = (0.3, 0.1)
    table = {0.3: 9.0, 0.1: 5.0, round(0.1 / 3, 12): 4.0, round(0.1 / 9, 12): 4.5}
    tried = _fake_runs(monkeypatch, table)
    opts, trials = hf.tune("sgd", rates, None, None, None, 0.1, 100)
    assert [round(r, 12) for r in tried] == [0.3, 0.1, round(0.1 / 3, 12), round(0.1 / 9, 12)]
    assert opts == dict(learning_rate=pytest.approx(0.1 / 3), momentum=0.9)
    assert len(trials) == 4


def test_tuning_stops_at_an_interior_winner_and_refuses_all_diverged(monkeypatch):
    tried = _fake_runs(monkeypatch, {0.3: 9.0, 0.1: 5.0, 0.03: 7.0})
    opts, _ = hf.tune("adam", (0.3, 0.1, 0.03), None, None, None, 0.1, 100)
    assert tried == [0.3, 0.1, 0.03] and opts == dict(learning_rate=0.1)

    diverging = {round(0.3 / 3**k, 12): None for k in range(hf.EXTEND + 1)}
    tried = _fake_runs(monkeypatch, diverging)
    with pytest.raises(SystemExit, match="diverged"):
        hf.tune("sgd", (0.3,), None, None, None, 0.1, 100)
    assert len(tried) == 1 + hf.EXTEND


def test_l2_runs_on_faces_are_set_beside_faces_star():
    assert hf.paper_row("faces", dict(l2=1e-2)) == "faces*"
    assert hf.paper_row("faces", dict(l2=0.0)) == "faces"
    assert hf.paper_row("curves", dict(l2=1e-4)) == "curves"
    assert hf.PAPER["faces*"] == (60.6, 122.0)
