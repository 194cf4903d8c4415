"""Build directories: loading in a fresh process without sympy, integrity checks."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors, testing
from symcurv.runtime import blas_threads, build


def test_load_in_new_process_without_sympy(compiled, build_root):
    _, prog = compiled("mlp")
    theta = prog.init(0)
    batch = testing.random_batch(prog, 4)
    loss, g = prog.grad(theta, batch)
    np.savez(build_root / "io.npz", theta=theta, g=g, loss=loss, **batch)
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import symcurv as sc
        d = np.load({str(build_root / "io.npz")!r})
        prog = sc.load({prog.build_dir!r})
        loss, g = prog.grad(d["theta"], {{"x": d["x"], "t": d["t"]}})
        assert abs(loss - float(d["loss"])) <= 1e-14 * abs(loss), loss
        assert np.array_equal(g, d["g"])
        assert prog.loss(d["theta"], {{"x": d["x"], "t": d["t"]}}) == loss
        views = prog.unflatten(g)
        assert np.array_equal(prog.flatten(views), g)
        print("sympy loaded:", "sympy" in sys.modules,
              "networkx loaded:", "networkx" in sys.modules)
    """)
    # the same BLAS thread count as here: it picks symcurv's product kernels or the BLAS
    # (runtime/gemm.py), whose sums differ in the last bits
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas_threads.threads() or 1)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "sympy loaded: False" in out.stdout


def test_numba_cache_of_another_module_name_is_dropped(compiled, tmp_path):
    """Numba's cache entries pickle the module name they were compiled under; a build
    cached under an older naming scheme must be recompiled, not crash in Numba."""
    _, prog = compiled("tied")
    dst = tmp_path / "renamed"
    shutil.copytree(prog.build_dir, dst, ignore=shutil.ignore_patterns("__pycache__"))
    batch = testing.random_batch(prog, 3)
    want = prog.loss(prog.init(0), batch)
    np.savez(tmp_path / "batch.npz", **batch)
    old_scheme = textwrap.dedent(f"""
        import numpy as np
        import symcurv as sc
        from symcurv.runtime import build
        original = build._import
        build._trust_cache = lambda path, name: None  # as before the marker existed
        build._import = lambda path, name: original(path, name.replace("_cpu_float64", ""))
        prog = sc.load({str(dst)!r})
        print(prog.loss(prog.init(0), dict(np.load({str(tmp_path / "batch.npz")!r}))))
    """)
    now = old_scheme.replace("build._import = lambda", "_ = lambda").replace(
        "build._trust_cache = lambda", "_ = lambda"
    )
    for code in (old_scheme, now):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert float(out.stdout.split()[-1]) == pytest.approx(want, rel=1e-14)


def _copy(prog, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(prog.build_dir, dst)
    return dst


def test_tampered_file_is_refused(compiled, tmp_path):
    _, prog = compiled("mlp")
    dst = _copy(prog, tmp_path)
    f = dst / "kernels" / "grad.py"
    f.write_text(f.read_text().replace("gemm(", "gemm( "))
    with pytest.raises(errors.BuildError) as e:
        sc.load(dst)
    assert "kernels/grad.py" in str(e.value) and "modified" in str(e.value)
    assert "rebuild" in str(e.value)


def test_partial_build_is_refused(compiled, tmp_path):
    _, prog = compiled("mlp")
    dst = _copy(prog, tmp_path)
    (dst / "kernels" / "loss.py").unlink()
    with pytest.raises(errors.BuildError, match="partial.*kernels/loss.py"):
        sc.load(dst)


def test_not_a_build_dir(tmp_path):
    with pytest.raises(errors.BuildError, match="not a symcurv build directory") as e:
        sc.load(tmp_path)
    assert "symcurv build" in str(e.value)


def test_corrupted_manifest(compiled, tmp_path):
    _, prog = compiled("mlp")
    dst = _copy(prog, tmp_path)
    (dst / "manifest.json").write_text("{ not json")
    with pytest.raises(errors.BuildError, match="corrupted"):
        sc.load(dst)


def test_hand_edited_manifest_is_refused(compiled, tmp_path, capsys):
    """Issue 16: n_params edited by hand was loaded (a spurious extra parameter) and
    `symcurv info` still said every hash was verified."""
    from symcurv import cli

    _, prog = compiled("mlp")
    dst = _copy(prog, tmp_path)
    path = dst / "manifest.json"
    man = json.loads(path.read_text())
    man["n_params"] += 1
    path.write_text(json.dumps(man, indent=1, sort_keys=True) + "\n")
    with pytest.raises(errors.BuildError) as e:
        sc.load(dst)
    assert "manifest.json was modified" in str(e.value) and "rebuild" in str(e.value)
    assert cli.main(["info", str(dst)]) == 2
    assert "manifest.json was modified" in capsys.readouterr().err
    # the same content re-indented is the same manifest
    man["n_params"] -= 1
    path.write_text(json.dumps(man, indent=4))
    assert sc.load(dst).n_params == prog.n_params


def test_build_for_another_dtype_is_refused(compiled):
    _, prog = compiled("mlp")
    with pytest.raises(errors.BuildError) as e:
        sc.load(prog.build_dir, dtype="float32")
    msg = str(e.value)
    assert "float64" in msg and "float32" in msg and "rebuild with dtype='float32'" in msg
    assert sc.load(prog.build_dir, dtype="float64").n_params == prog.n_params


def test_manifest_lists_every_generated_file(compiled):
    _, prog = compiled("tied")
    man = json.loads((Path(prog.build_dir) / "manifest.json").read_text())
    shared = {
        f"kernels/shared/{p.name}" for p in Path(prog.build_dir, "kernels/shared").glob("*.py")
    }
    assert (
        shared
        and set(man["files"]) == {"kernels/loss.py", "kernels/grad.py", "graph.json"} | shared
    )
    assert man["dtype"] == "float64" and man["backend"] == "cpu"
    assert [p["name"] for p in man["params"]] == ["W", "b", "c"]
    assert man["versions"]["numba"]


def test_rebuild_is_deterministic_and_keeps_unchanged_files(compiled, tmp_path):
    import models

    from symcurv.pipeline import build

    a = build(models.mlp(), ("loss", "grad"), build_dir=tmp_path / "a", progress=False)
    b = build(models.mlp(), ("loss", "grad"), build_dir=tmp_path / "b", progress=False)
    for rel in ("kernels/grad.py", "kernels/loss.py", "graph.json", "manifest.json"):
        assert (a / rel).read_text() == (b / rel).read_text(), rel
    mtime = (a / "kernels/grad.py").stat().st_mtime_ns
    build(models.mlp(), ("loss", "grad"), build_dir=tmp_path / "a", progress=False)
    assert (a / "kernels/grad.py").stat().st_mtime_ns == mtime


def test_unbuilt_program_is_a_clear_error(tmp_path):
    import models

    prog = sc.compile(models.tied(), programs=("loss",), build_dir=tmp_path / "l", progress=False)
    with pytest.raises(errors.BuildError, match="program 'grad' was not built"):
        prog.grad(prog.init(0), testing.random_batch(prog, 2))
    # the fix names what programs= takes: 'cp_diag', not only the internal 'cp_S'
    with pytest.raises(errors.BuildError, match="including 'cp_diag' \\(or just 'cp_S'\\)"):
        prog.cp_diag(prog.init(0), testing.random_batch(prog, 2), "S", seed=0)


def test_numba_cache_compiled_against_another_runtime_is_dropped(tmp_path):
    """A build's cached code holds the runtime functions it calls (vecmath, gemm) compiled
    in; after symcurv's runtime changes, its entries must be recompiled, not run."""
    kernel = tmp_path / "k.py"
    kernel.write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    entries = [cache / "k.f-3.py311.nbi", cache / "k.f-3.py311.1.nbc"]
    marker = cache / "k.symcurv-module"
    for stamp, kept in (
        (f"mod\n{build.runtime_fingerprint()}", True),
        ("mod\n0123456789abcdef", False),  # compiled against another runtime
        (f"other\n{build.runtime_fingerprint()}", False),  # under another module name
        ("mod", False),  # a marker from before the fingerprint
    ):
        for e in entries:
            e.write_bytes(b"cached")
        marker.write_text(stamp)
        build._trust_cache(kernel, "mod")
        assert [e.exists() for e in entries] == [kept, kept], stamp
        assert marker.read_text() == f"mod\n{build.runtime_fingerprint()}"


def test_a_rebuild_removes_the_kernel_files_it_no_longer_lists(tmp_path):
    """A changed kernel is a new content-addressed file: the old one, its Numba cache
    entries and marker go when the build that replaced it is written."""
    manifest = {"model": "m", "backend": "cpu", "dtype": "float64"}
    old = {"kernels/grad.py": "a = 1\n", "kernels/shared/map_tanh_1.py": "b = 1\n"}
    build.write(tmp_path, manifest, old)
    cache = tmp_path / "kernels" / "shared" / "__pycache__"
    cache.mkdir()
    stale = [cache / "map_tanh_1.map_tanh_1-9.py311.nbi", cache / "map_tanh_1.symcurv-module"]
    kept = cache / "map_tanh_10.map_tanh_10-9.py311.nbi"  # another kernel's (a longer name)
    for e in (*stale, kept):
        e.write_text("cached")
    new = {"kernels/grad.py": "a = 1\n", "kernels/shared/map_tanh_10.py": "c = 1\n"}
    build.write(tmp_path, manifest, new)
    assert not (tmp_path / "kernels/shared/map_tanh_1.py").exists()
    assert not any(e.exists() for e in stale) and kept.exists()
    assert sorted(build.read_manifest(tmp_path)["files"]) == sorted(new)
    build.verify(tmp_path, build.read_manifest(tmp_path))
    assert all((tmp_path / rel).read_text() == text for rel, text in new.items())
