"""The experiment scripts' command lines: a complete ``--help`` (the whole description,
help text on every option), results written under build/ unless ``--update-docs`` asks for
the tracked docs figures, and ``--quick`` small enough to be the promised smoke run."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "examples"))  # cp_accuracy imports cp_net beside it
    try:
        spec = importlib.util.spec_from_file_location(
            f"_symcurv_example_{name}", ROOT / "examples" / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return mod


hf = _load("hf_autoencoders")
cpa = _load("cp_accuracy")


@pytest.mark.parametrize("mod", [hf, cpa], ids=["hf_autoencoders", "cp_accuracy"])
def test_help_is_complete(mod):
    ap = mod.parser()
    assert ap.description == mod.__doc__  # the whole docstring, not its first line
    for action in ap._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, action.dest
    text = ap.format_help()
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
    ds = _load("datasets")
    monkeypatch.setattr(ds, "ROOT", tmp_path)

    def no_faces(*a, **k):
        raise ImportError("not needed here")

    monkeypatch.setattr(ds, "faces", no_faces)
    assert ds.main([]) == 0
    assert (tmp_path / "build/datasets/curves_examples.png").stat().st_size > 0
    assert not (tmp_path / "docs").exists()
    assert ds.main(["--update-docs"]) == 0
    assert (tmp_path / "docs/img/curves_examples.png").exists()
