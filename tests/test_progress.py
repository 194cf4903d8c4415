"""The build's Numba warm-up shows a tqdm bar on stderr, and nothing with progress=False
(on the session's already-compiled model, so nothing is compiled again)."""

from __future__ import annotations

from symcurv import pipeline
from symcurv.runtime import compile_parallel


def test_warm_up_bar_and_quiet(compiled, capsys):
    _, prog = compiled("tied")
    capsys.readouterr()
    pipeline.warm(prog, progress=False)
    assert capsys.readouterr().err == ""
    pipeline.warm(prog, progress=True)
    err = capsys.readouterr().err
    n = len(compile_parallel.kernel_signatures(prog, list(prog.programs)))  # distinct kernels
    assert "compiling 'tied' with Numba" in err and "100%|" in err and f"{n}/{n}" in err
    assert "compiled 'loss'" in err and "compiled 'grad'" in err


def test_a_bar_in_a_log_is_redrawn_rarely(capsys):
    """stderr captured (not a terminal, like a CI log): a redraw at most every
    LOG_INTERVAL seconds, not ten times a second; on a terminal the caller's interval."""
    from symcurv import progress

    b = progress.bar(range(3), desc="x")
    assert b.mininterval == progress.LOG_INTERVAL
    list(b)
    assert "3/3" in capsys.readouterr().err
    quiet = progress.bar(range(3), enabled=False)
    list(quiet)
    assert capsys.readouterr().err == ""
