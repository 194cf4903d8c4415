"""Helpers of the example-script tests: load an example by path, check its command line."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load(name: str):
    """examples/<name>.py as a module under a private name ("datasets" would clash with
    Hugging Face's package), with examples/ on the path while it runs (cp_accuracy imports
    cp_net beside it, poe_lambda imports poe_score_matching)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(
            f"_symcurv_example_{name}", EXAMPLES / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(EXAMPLES))
    return mod


def assert_help_is_complete(mod) -> str:
    """The script's ``--help``: the whole docstring as its description and a help text on
    every option; returns the help text."""
    ap = mod.parser()
    assert ap.description == mod.__doc__  # the whole docstring, not its first line
    for action in ap._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and len(action.help) > 10, action.dest
    return ap.format_help()
