"""The experiment scripts' command lines: a complete ``--help`` (the whole description,
help text on every option), results written under build/ unless ``--update-docs`` asks for
the tracked docs figures, and ``--quick`` small enough to be the promised smoke run."""

from __future__ import annotations

from pathlib import Path

import example_modules
import pytest

ROOT = example_modules.ROOT


hf = example_modules.load("hf_autoencoders")
cpa = example_modules.load("cp_accuracy")


@pytest.mark.parametrize("mod", [hf, cpa], ids=["hf_autoencoders", "cp_accuracy"])
def test_help_is_complete(mod):
    text = example_modules.assert_help_is_complete(mod)
    last = mod.__doc__.strip().splitlines()[-1].strip()
    assert "--update-docs" in text and last in text  # the description is not cut off


def test_hf_plot_goes_to_build_unless_docs_are_updated(tmp_path, monkeypatch):
    monkeypatch.setattr(hf, "ROOT", tmp_path)
    assert hf.plot_path("curves", "_quick", False) == tmp_path / "build/hf/hf_curves_quick.png"
    assert hf.plot_path("curves", "", True) == tmp_path / "docs/img/hf_curves.png"
    args = hf.parser().parse_args(["curves"])
    assert args.update_docs is False


def test_cp_accuracy_plot_goes_to_build_unless_docs_are_updated():
    default = cpa.out_path(cpa.parser().parse_args([]))
    assert default == ROOT / "build" / "cp_accuracy" / "cp_accuracy.png"
    docs = cpa.out_path(cpa.parser().parse_args(["--update-docs"]))
    assert docs == ROOT / "docs" / "img" / "cp_accuracy.png"
    assert cpa.out_path(cpa.parser().parse_args(["--out", "x.png"])) == Path("x.png")


def test_quick_is_a_short_run():
    """Training time of --quick: every method's budget plus every tuning trial, without
    grid extensions; with evaluation and the cached build it measured 75 s."""
    q = hf.QUICK
    trials = 2 * q["rates"] * q["tune_minutes"] * 60
    assert 3 * q["minutes"] * 60 + trials <= 60
    assert q["train"] <= 1000 and q["curvature"] <= 500


def test_datasets_grids_go_to_build_unless_docs_are_updated(tmp_path, monkeypatch):
    ds = example_modules.load("datasets")
    monkeypatch.setattr(ds, "ROOT", tmp_path)

    def no_faces(*a, **k):
        raise ImportError("not needed here")

    monkeypatch.setattr(ds, "faces", no_faces)
    assert ds.main([]) == 0
    assert (tmp_path / "build/datasets/curves_examples.png").stat().st_size > 0
    assert not (tmp_path / "docs").exists()
    assert ds.main(["--update-docs"]) == 0
    assert (tmp_path / "docs/img/curves_examples.png").exists()
