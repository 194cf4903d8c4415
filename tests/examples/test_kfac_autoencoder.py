"""examples/kfac_autoencoder.py: the network is 003 §4.2's (checked at graph level against
numpy: nothing is compiled), the error is Table 2's measure, every method gets the same
sweep and the best final training error wins, and --quick stays a smoke run."""

from __future__ import annotations

import math

import example_modules
import numpy as np
import pytest

from symcurv.runtime.reference import evaluate

ka = example_modules.load("kfac_autoencoder")


def test_help_is_complete():
    text = example_modules.assert_help_is_complete(ka)
    assert "--update-docs" in text and "--quick" in text


def test_network_is_the_mirrored_autoencoder_with_squared_error():
    sizes = (9, 5, 3)
    m = ka.model(sizes)
    shapes = {k: v["shape"] for k, v in m.params.items()}
    assert shapes == {
        "W0": (5, 9),
        "b0": (5,),
        "W1": (3, 5),
        "b1": (3,),
        "W2": (5, 3),
        "b2": (5,),
        "W3": (9, 5),
        "b3": (9,),
    }
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    x = rng.uniform(size=(4, 9))
    h = x
    for i in range(4):  # logistic hidden units, linear code (layer 1) and output (layer 3)
        a = h @ params[f"W{i}"].T + params[f"b{i}"]
        h = a if i in (1, 3) else 1 / (1 + np.exp(-a))
    want = np.mean(np.sum((h - x) ** 2, axis=1))  # the error the script reports
    got = 2 * float(np.ravel(evaluate(m.forward_graph(), {**params, "x": x})["objective"])[0])
    assert got == pytest.approx(want, rel=1e-12)


def test_every_method_is_swept_the_same_way():
    assert set(ka.SWEEPS) == set(ka.METHODS) == set(ka.NAMES)
    grids = {len(grid) for _name, grid in ka.SWEEPS.values()}
    assert grids == {3}  # the same number of values, each for the same time


def _fake_runs(monkeypatch, final_by_value: dict):
    tried = []

    def run(method, value, prog, data, budget, every_s, every):
        tried.append(value)
        final = final_by_value[value]
        if final is None:
            return dict(status="failed: fake", errors=[dict(train=1.0)], steps=3)
        return dict(status="ok", errors=[dict(time=budget, train=final)], steps=5)

    monkeypatch.setattr(ka, "run", run)
    return tried


def test_tuning_takes_the_best_final_training_error(monkeypatch):
    tried = _fake_runs(monkeypatch, {0.1: 5.0, 1.0: 3.0, 0.01: math.nan})
    value, trials = ka.tune("kfac", (0.1, 1.0, 0.01), None, None, 1.0, 100, extend=0)
    assert tried == [0.1, 1.0, 0.01] and value == 1.0
    assert [t["final_train"] for t in trials][:2] == [5.0, 3.0]
    assert trials[2]["final_train"] == math.inf  # a NaN error never wins


def test_tuning_extends_the_grid_while_the_best_is_at_its_edge(monkeypatch):
    finals = {0.01: 5.0, 0.03: 4.0, 0.003: 6.0, 0.1: 3.0, 0.3: 3.5}
    tried = _fake_runs(monkeypatch, finals)
    value, trials = ka.tune("centered", (0.01, 0.03, 0.003), None, None, 1.0, 100, extend=3)
    assert tried == [0.01, 0.03, 0.003, 0.1, 0.3] and value == 0.1  # 0.3 made 0.1 interior
    assert not trials[-2]["edge"] and trials[-1]["extended"]
    tried.clear()  # at most `extend` values: a best still at the edge is flagged
    finals.update({0.3: 2.0, 1.0: 1.0})
    value, trials = ka.tune("centered", (0.01, 0.03, 0.003), None, None, 1.0, 100, extend=2)
    assert tried == [0.01, 0.03, 0.003, 0.1, 0.3] and value == 0.3 and trials[-1]["edge"]
    assert ka.outward(0.003, up=False) == 0.001 and ka.outward(3.0, up=True) == 10.0


def test_trials_and_runs_are_cached_and_reused(monkeypatch, tmp_path):
    import json

    tried = _fake_runs(monkeypatch, {1.0: 3.0, 0.1: 5.0, 3.0: 4.0})
    cache = ka.Cache(tmp_path / "cache")
    ka.tune("acp", (1.0, 0.1), None, None, 2.0, 100, cache, extend=1)
    assert tried == [1.0, 0.1, 3.0]
    tried.clear()
    value, trials = ka.tune("acp", (1.0, 0.1), None, None, 2.0, 100, cache, extend=1)
    assert tried == [] and value == 1.0 and [t["final_train"] for t in trials] == [3.0, 5.0, 4.0]
    ka.tune("acp", (1.0,), None, None, 3.0, 100, cache, extend=0)  # another trial length
    assert tried == [1.0]
    old = dict(sizes=[9, 5], every=100, tune_minutes=2.0 / 60)
    old["tuning"] = {"sgd": [dict(value=0.01, final_train=7.0, steps=4, status="ok")]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    fresh = ka.Cache(tmp_path / "other")
    assert fresh.reuse([tmp_path / "old.json"], (9, 5), 2.0, 100) == 1
    assert fresh.reuse([tmp_path / "old.json"], (9, 5), 3.0, 100) == 0  # trial length differs
    assert fresh.get("trial", "sgd", 0.01, 2.0, 100)["final_train"] == 7.0


def test_tuning_refuses_when_every_value_failed(monkeypatch):
    _fake_runs(monkeypatch, {0.3: None, 1.0: None})
    with pytest.raises(SystemExit, match="every value tried failed"):
        ka.tune("acp", (0.3, 1.0), None, None, 1.0, 100, extend=0)


def test_table_reads_errors_at_equal_times():
    rows = [dict(time=t, train=10 - t, test=11 - t) for t in (0.0, 2.0, 4.0, 8.0, 9.5)]
    assert ka.at_time(rows, 9.45)["time"] == 9.5  # a step past the shared budget
    assert ka.at_time(rows, 5.0)["time"] == 4.0
    results = dict(
        minutes=8 / 60, runs={"sgd": dict(value=0.01, steps=7, errors=rows, status="ok")}
    )
    text = ka.table(results)
    assert "| SGD + momentum | learning_rate = 0.01 | 7 | 8.000 / 9.000 | 6.000 / 7.000 |" in text


def test_data_are_square_curves_images_and_quick_is_small():
    train, (tr, te) = ka.data(100, n_train=30, n_test=20, n_eval=10)
    assert train.shape == (30, 100) and tr.shape == te.shape == (10, 100)
    assert np.array_equal(tr, train[:10]) and not np.array_equal(tr, te)
    with pytest.raises(SystemExit, match="square"):
        ka.data(99)
    q = ka.QUICK
    assert q["sizes"][0] <= 100 and q["train"] <= 300
    assert len(ka.METHODS) * (q["grid"] * q["tune_s"] + q["run_s"]) <= 30


def test_plot_goes_to_build_unless_docs_are_updated(tmp_path, monkeypatch):
    monkeypatch.setattr(ka, "ROOT", tmp_path)
    assert ka.plot_path("_quick", False) == tmp_path / "build/kfac_ae/kfac_autoencoder_quick.png"
    assert ka.plot_path("", True) == tmp_path / "docs/img/kfac_autoencoder.png"


def test_a_cut_run_keeps_its_curve_and_the_table_marks_what_it_did_not_reach(tmp_path):
    import json

    class Prog:
        def loss(self, theta, batch):
            return float(theta)

    path = tmp_path / "partial.json"
    cb = ka.Errors(
        Prog(),
        np.zeros((2, 3)),
        np.zeros((2, 3)),
        10.0,
        0.0,
        (path, dict(method="adam", value=0.001)),
    )
    cb.record(0, 4.0, 0.0)
    cb.record(7, 3.0, 4.0)  # then the process is killed
    run = json.loads(path.read_text())
    assert run["status"] == "partial" and run["steps"] == 7 and len(run["errors"]) == 2
    text = ka.table(dict(minutes=8 / 60, runs={"adam": run}))
    assert (
        "| Adam | learning_rate = 0.001 | 7 (cut at 4 s) | 8.000 / 8.000 | 6.000 / 6.000 | — |"
        in text
    )
