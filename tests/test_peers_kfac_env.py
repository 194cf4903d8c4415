"""benchmarks/peers_kfac.py refuses, with the recipe for a working environment, a
--jax-python whose kfac-jax cannot run (kfac-jax 0.0.8 on jax >= 0.9) or that cannot import
the packages its side needs. Fake interpreters (shell scripts) stand in for environments:
nothing here imports jax."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers_kfac.py"
spec = importlib.util.spec_from_file_location("peers_kfac", PATH)
peers_kfac = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers_kfac)


def _python(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_versions_compare_by_their_numbers():
    assert peers_kfac._version("0.8.3") == (0, 8, 3)
    assert peers_kfac._version("0.10.2rc1") == (0, 10, 2) > (0, 9)
    assert peers_kfac._version("0.0.8.dev2") == (0, 0, 8)


def test_a_jax_that_kfac_jax_supports_is_accepted(tmp_path):
    python = _python(tmp_path, """echo '["0.8.3", "0.0.8"]'""")
    assert peers_kfac.check_jax_python(python) == ("0.8.3", "0.0.8")


def test_kfac_jax_008_on_jax_09_or_newer_is_refused_with_the_recipe(tmp_path):
    python = _python(tmp_path, """echo '["0.10.2", "0.0.8"]'""")
    with pytest.raises(SystemExit, match=r"jax 0\.10\.2 with kfac-jax 0\.0\.8") as e:
        peers_kfac.check_jax_python(python)
    assert 'pip install "jax[cpu]==0.8.3" "kfac-jax==0.0.8"' in str(e.value)


def test_a_failing_import_or_a_missing_interpreter_is_refused(tmp_path):
    python = _python(
        tmp_path, "echo \"ModuleNotFoundError: No module named 'kfac_jax'\" >&2; exit 1"
    )
    with pytest.raises(SystemExit, match="cannot import jax, kfac_jax and symcurv .*kfac_jax"):
        peers_kfac.check_jax_python(python)
    with pytest.raises(SystemExit, match="cannot run it"):
        peers_kfac.check_jax_python(str(tmp_path / "nowhere" / "python"))
