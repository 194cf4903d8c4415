"""Golden test of one generated kernel file: the emitted source is part of the product
(readable, commented, deterministic), so any change to it must be deliberate.

After an intended change to codegen, regenerate with

    SYMCURV_UPDATE_GOLDEN=1 python -m pytest tests/codegen/test_golden.py

and review the diff of tests/golden/ like any other code change.
"""

import os
import re
from pathlib import Path

import models
import pytest

from symcurv.pipeline import build

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture(scope="module")
def tied_build(tmp_path_factory):
    # build() only writes files (no Numba compile): cheap enough to run per module.
    return build(
        models.tied(), ("loss", "grad"), build_dir=tmp_path_factory.mktemp("g"), progress=False
    )


def _generated(build_dir, name: str) -> str:
    """A program module (``grad``), or the shared file of one of its kernels
    (``grad:k1_map_logistic``: whichever file its ``kernel(...)`` line names)."""
    program, _, kernel = name.partition(":")
    src = (build_dir / "kernels" / f"{program}.py").read_text()
    if not kernel:
        return src
    shared = re.search(rf"^{kernel} = kernel\('(\w+)'\)", src, re.M).group(1)
    return (build_dir / "kernels" / "shared" / f"{shared}.py").read_text()


@pytest.mark.parametrize(
    "program", ["grad", "grad:k1_map_logistic", "grad:k4_map_mul", "grad:k5_reduce_bsum"]
)
def test_generated_source_matches_golden(tied_build, program):
    got = _generated(tied_build, program)
    path = GOLDEN / f"tied_{program.replace(':', '_')}.py"
    if os.environ.get("SYMCURV_UPDATE_GOLDEN"):
        path.write_text(got)
    assert path.is_file(), f"{path} missing: run with SYMCURV_UPDATE_GOLDEN=1 to create it"
    want = path.read_text()
    assert got == want, (
        f"generated {program}.py differs from {path}; if the change is intended, "
        "regenerate with SYMCURV_UPDATE_GOLDEN=1 and review the diff"
    )


def test_every_kernel_has_a_comment_block_naming_nodes_and_dsl_line(tied_build):
    src = (tied_build / "kernels" / "grad.py").read_text()
    header = re.findall(r"^  (k\d+_\w+)\s", src, re.M)
    blocks = re.findall(r"^# (k\d+_\w+): .*\n#   IR nodes: (.+)\n#   DSL: (.+)$", src, re.M)
    assert header and [b[0] for b in blocks] == header  # one block per kernel, in order
    for name, nodes, dsl in blocks:
        assert re.fullmatch(r"(n\d+ \w+)(, n\d+ \w+)*", nodes), (name, nodes)
        assert re.match(r"models\.py:\d+: ", dsl), (name, dsl)
        assert f"# {name}  (models.py:" in src  # the driver's call site names it again
    compile(src, "grad.py", "exec")  # valid Python before Numba ever sees it
