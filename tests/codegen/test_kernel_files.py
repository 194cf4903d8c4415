"""Content-addressed kernel files (codegen/kernel_files.py): a kernel's shared file is
named by its text up to names, so equal loops share one file and changed loops never do.
No Numba compile here: build() only writes files."""

import json
import re

import models
import pytest

from symcurv.codegen import kernel_files
from symcurv.pipeline import build

HEADER = ["import numpy as np  # noqa: F401", "", "PARALLEL = False"]


def _map(name: str, arrays: tuple[str, str, str], args: tuple[str, str], formula: str):
    """A map kernel as the CPU emitter prints it: scalar function, then the loop."""
    x, b, y = arrays
    scalar = [
        "@njit(cache=True, inline='always', error_model='numpy')",
        f"def f_{name}({', '.join(args)}):",
        f'    """Scalar formulas of {name}: add, logistic."""',
        f"    return {formula}",
    ]
    loop = [
        "@njit(cache=True, parallel=PARALLEL, error_model='numpy')",
        f"def {name}(B, {x}, {b}, {y}):",
        "    for i in prange(B):",
        "        for j in range(4):",
        f"            {y}[i, j] = f_{name}({x}[i, j], {b}[j])",
    ]
    return kernel_files.Compiled(name, [scalar, loop], {y})


def test_the_same_loop_under_other_names_is_one_file():
    a = _map(
        "k1_map_logistic", ("s0", "p_b0", "s1"), ("a_W0", "b0"), "1.0/(vm.exp(-a_W0 - b0) + 1.0)"
    )
    b = _map(
        "k5_map_logistic_2",
        ("s7", "p_b0", "s3"),
        ("a_W0_1", "b"),
        "1.0/(vm.exp(-a_W0_1 - b) + 1.0)",
    )
    (na, ta, pa), (nb, tb, pb) = (kernel_files.shared_file(k, HEADER) for k in (a, b))
    assert na == nb and ta == tb and re.fullmatch(r"map_logistic_[0-9a-f]{12}", na)
    assert (pa, pb) == (["s0", "p_b0", "s1"], ["s7", "p_b0", "s3"])  # the driver's arrays
    assert f"def {na}(B, x0, x1, y0):" in ta and "y0[i, j] = f_" + na + "(x0[i, j], x1[j])" in ta
    assert f"def f_{na}(a0, a1):" in ta and "vm.exp(-a0 - a1)" in ta
    for program_name in ("k1_map_logistic", "s0", "p_b0", "a_W0", "add, logistic"):
        assert program_name not in ta


def test_a_changed_formula_is_another_file():
    a = _map("k1_map_logistic", ("s0", "p_b0", "s1"), ("a", "b"), "1.0/(vm.exp(-a - b) + 1.0)")
    c = _map("k1_map_logistic", ("s0", "p_b0", "s1"), ("a", "b"), "1.0/(vm.exp(a - b) + 1.0)")
    assert kernel_files.shared_file(a, HEADER)[0] != kernel_files.shared_file(c, HEADER)[0]
    parallel = kernel_files.shared_file(a, ["PARALLEL = True"])[0]
    assert parallel != kernel_files.shared_file(a, HEADER)[0]  # the header is hashed too


def test_renaming_leaves_attributes_and_derived_names_right():
    """An argument named like a vecmath function keeps ``vm.exp`` intact; a flat view of
    an array (``flat_p_s1``) follows its array, the longest name first (``p_s1``, not
    ``s1``)."""
    scalar = [
        "@njit(cache=True, inline='always', error_model='numpy')",
        "def f_k2_map_exp(exp):",
        "    return vm.exp(exp)",
    ]
    loop = [
        "@njit(cache=True, parallel=PARALLEL, error_model='numpy')",
        "def k2_map_exp(B, p_s1, s1):",
        "    flat_p_s1 = p_s1.reshape(-1)",
        "    flat_s1 = s1.reshape(-1)",
        "    for e in prange(B * 4):",
        "        flat_s1[e] = f_k2_map_exp(flat_p_s1[e])",
    ]
    name, text, _ = kernel_files.shared_file(
        kernel_files.Compiled("k2_map_exp", [scalar, loop], {"s1"}), HEADER
    )
    assert "return vm.exp(a0)" in text
    assert "flat_x0 = x0.reshape(-1)" in text and "flat_y0 = y0.reshape(-1)" in text
    assert f"flat_y0[e] = f_{name}(flat_x0[e])" in text


@pytest.fixture(scope="module")
def tied_files(tmp_path_factory):
    root = build(
        models.tied(),
        ("loss", "grad", "hvp"),
        build_dir=tmp_path_factory.mktemp("kf"),
        progress=False,
    )
    return root, {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.py")}


def test_programs_name_shared_files_the_manifest_hashes(tied_files):
    root, files = tied_files
    manifest = json.loads((root / "manifest.json").read_text())
    programs = [f for f in files if not f.startswith("kernels/shared/")]
    calls = {p: re.findall(r"^(\w+) = kernel\('(\w+)'\)", files[p], re.M) for p in programs}
    used = {s for c in calls.values() for _, s in c}
    assert used == {
        f[len("kernels/shared/") : -3] for f in files if f.startswith("kernels/shared/")
    }
    assert all(f"kernels/shared/{s}.py" in manifest["files"] for s in used)
    n_calls = sum(len(c) for c in calls.values())
    assert len(used) < n_calls  # some loop is shared between programs
    # a shared kernel is imported by more than one program module
    assert any(sum(s in dict(c).values() for c in calls.values()) > 1 for s in used)


def test_the_files_are_the_same_in_a_second_build(tied_files, tmp_path):
    root, files = tied_files
    again = build(models.tied(), ("loss", "grad", "hvp"), build_dir=tmp_path, progress=False)
    assert {p.relative_to(again).as_posix(): p.read_text() for p in again.rglob("*.py")} == files
