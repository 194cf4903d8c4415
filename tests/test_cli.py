"""The ``symcurv`` command line, called in-process through ``cli.main`` (plus one check
that the installed entry point runs)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symcurv import cli

ROOT = Path(__file__).resolve().parents[1]
TIED = f"{ROOT / 'tests' / 'models.py'}:tied"


def test_entry_point_is_installed():
    exe = shutil.which("symcurv")
    assert exe, "the console script is missing: pip install -e ."
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("demo", "build", "graph", "info", "check"):
        assert cmd in out.stdout


def test_build_then_info(tmp_path, capsys):
    assert cli.main(["build", TIED, "-o", str(tmp_path / "b"), "--programs", "loss"]) == 0
    built = capsys.readouterr()
    assert "Program 'tied'" in built.out and "compiled 'loss'" in built.err  # progress shown
    assert cli.main(["info", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    n_files = 2 + len(list((tmp_path / "b" / "kernels" / "shared").glob("*.py")))  # + kernels
    assert f"all {n_files} file hashes verified" in out and "dtype float64" in out
    for row in ("W ", "3x6", "models.py:", "kernels/loss.py", "KiB/case"):
        assert row in out, row


def test_build_with_drivers_leaves_them_compiled_in_the_build(tmp_path, capsys):
    from symcurv.runtime import drivers

    out = tmp_path / "b"
    assert cli.main(["build", TIED, "-o", str(out), "--programs", "loss,hvp", "--drivers"]) == 0
    assert "compiled the drivers of 2 programs" in capsys.readouterr().out
    import symcurv as sc

    prog = sc.load(out)  # every part's compiled driver is in the cache: from the 2nd call
    assert set(prog._modules) == {"loss", "hvp", "hvp.static", "hvp.whole"}
    assert all(drivers.cached_on_disk(m) for m in prog._modules.values())


def test_check_prints_a_table_and_passes(capsys, tmp_path, monkeypatch):
    # one curvature program besides loss/grad keeps CI's compile time down; every program
    # is checked against the reference in tests/runtime
    monkeypatch.setenv("SYMCURV_CACHE", str(tmp_path))
    assert cli.main(["check", TIED, "--programs", "loss,grad,cp_S"]) == 0
    # built into the cache directory sc.compile(build_dir=None) uses, not a temporary one,
    # so the next check reuses Numba's compiled code (issue 16: it rebuilt every time)
    (cached,) = tmp_path.glob("tied-*-cpu-float64")
    assert (cached / "manifest.json").is_file() and list(
        cached.glob("kernels/shared/__pycache__/*.nbi")
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["program", "against"]
    rows = {(ln.split()[0], ln.split()[1]): ln.split()[-1] for ln in lines[2:]}
    assert rows[("loss", "reference")] == "pass" and rows[("grad", "reference")] == "pass"
    assert rows[("grad", "central")] == "pass" and rows[("cp_S", "reference")] == "pass"


def test_check_lists_the_input_programs(capsys, tmp_path, monkeypatch):
    """Issue 14: `symcurv check` checks the data-derivative programs too, against the
    reference interpreter and against central differences in x."""
    monkeypatch.setenv("SYMCURV_CACHE", str(tmp_path))
    assert cli.main(["check", TIED, "--programs", "input_grad,input_hvp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {" ".join(ln.split()[:-3]): ln.split()[-1] for ln in lines[2:] if ln.strip()}
    want = ("input_grad", "input_hvp", "input_grad (x)", "input_hvp (x)")
    assert all(any(k.startswith(w) and v == "pass" for k, v in rows.items()) for w in want), rows


def test_check_in_float32(capsys):
    assert cli.main(["check", TIED, "--dtype", "float32", "--programs", "loss,grad"]) == 0
    out = capsys.readouterr().out
    assert "2e-04" in out and "FAIL" not in out


@pytest.mark.parametrize("suffix", [".dot", ".png"])
def test_graph_of_the_gradient(tmp_path, capsys, suffix):
    path = tmp_path / f"grad{suffix}"
    model = str(ROOT / "examples" / "cp_net.py")
    assert cli.main(["graph", model, "--program", "grad", "-o", str(path)]) == 0
    assert path.stat().st_size > 1000 and f"wrote {path}" in capsys.readouterr().out


def test_graph_svg_uses_graphviz_or_says_how_to_get_it(tmp_path, capsys):
    path = tmp_path / "grad.svg"
    rc = cli.main(["graph", TIED, "--program", "grad", "-o", str(path)])
    if shutil.which("dot"):
        assert rc == 0 and path.read_text().lstrip().startswith(("<?xml", "<svg"))
    else:
        err = capsys.readouterr().err
        assert rc == 2 and "graphviz" in err.lower() and ".png" in err


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "not a symcurv build directory" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "nope.py")]) == 2
    assert "no model file" in capsys.readouterr().err
    assert cli.main(["check", f"{ROOT / 'tests' / 'models.py'}:missing"]) == 2
    err = capsys.readouterr().err
    assert "no function 'missing'" in err and "tied" in err


def test_cli_runs_as_a_module():
    # `python -m symcurv.cli --help` works without the console script (e.g. in CI logs).
    out = subprocess.run(
        [sys.executable, "-m", "symcurv.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_builds_draws_and_verifies(tmp_path, capsys):
    assert cli.main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("pass") >= 2
    for rel in ("cp_net/manifest.json", "cp_net/kernels/grad.py", "forward.png", "grad.dot"):
        assert (tmp_path / rel).is_file(), rel
        assert rel in out  # it says what it made and where


def test_graph_draws_every_name_it_accepts(tmp_path, capsys):
    """Issue 16: cp_diag and linearize ended in tracebacks, 'all' was refused. A name that
    stands for several graphs writes one file per graph beside -o."""
    from symcurv import pipeline

    expect = {
        "cp_diag": ["cp_S", "cp_TU", "cp_GN", "hvp"],
        "linearize": [
            *("hvp_static", "gnvp_static", "cp_S_static", "cp_TU_static", "cp_GN_static"),
            *("input_hvp_static", "input_diag_S_static", "input_diag_TU_static"),
        ],
        "becker_lecun_diag": None,
        "input_diag_hessian": ["input_hvp", "input_diag_S", "input_diag_TU", "input_bl"],
        "kfac": ["kfac_cp", "kfac_empirical"],
        "all": ["forward", *pipeline.PROGRAMS],
    }
    for name, files in expect.items():
        out = tmp_path / name / "g.dot"
        out.parent.mkdir()
        assert cli.main(["graph", TIED, "--program", name, "-o", str(out)]) == 0, name
        written = sorted(p.name for p in out.parent.iterdir())
        want = ["g.dot"] if files is None else sorted(f"g_{f}.dot" for f in files)
        assert written == want, name
        assert all((out.parent / w).read_text().startswith("digraph") for w in written)
    capsys.readouterr()
    # every name the parser offers is one program_graphs draws, and nothing else is accepted
    assert set(expect) | {"forward", *pipeline.PROGRAMS} == set(pipeline.GRAPH_NAMES)
    with pytest.raises(SystemExit):
        cli.main(["graph", TIED, "--program", "nope", "-o", str(tmp_path / "x.dot")])
    assert "invalid choice" in capsys.readouterr().err


def test_info_shows_skipped_programs_and_initialisers(tmp_path, capsys):
    """Issue 16: programs skipped for want of a Gauss-Newton split were not shown, and
    zeros() read as 'constant'. pipeline.build writes the directory without Numba."""
    import symcurv as sc
    from symcurv import pipeline

    m = sc.Model("noloss_info")
    x = m.input("x", 3)
    W = m.param("W", (2, 3), init=sc.init.normal(0.1))
    b = m.param("b", 2, init=sc.init.zeros())
    c = m.param("c", 2, init=sc.init.constant(0.5))
    m.minimize(sc.sum(sc.tanh(W @ x + b) * c))
    pipeline.build(m, programs="all", build_dir=tmp_path / "b", progress=False)
    assert cli.main(["info", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "normal(0.1)" in out and "zeros()" in out and "constant(0.5)" in out
    assert "constant " not in out.replace("constant(0.5)", "")
    for name in ("gnvp", "cp_GN"):
        assert f"skipped '{name}' (not built for this model):" in out
    assert "Gauss-Newton" in out


def test_model_file_errors_are_one_line_with_exit_2(tmp_path, capsys):
    """Issue 16: a syntax error in the model file printed a full traceback (exit 1)."""
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("import symcurv as sc\n\n\ndef model(:\n    pass\n")
    assert cli.main(["build", str(bad), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4" in err and "syntax error" in err and "Traceback" not in err
    broken = tmp_path / "broken.py"
    broken.write_text("import symcurv as sc\n\n\ndef model():\n    return sc.Modle('x')\n")
    assert cli.main(["check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:5" in err and "AttributeError" in err and "Traceback" not in err
