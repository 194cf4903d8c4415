"""The build's Numba warm-up shows a tqdm bar on stderr, and nothing with progress=False
(on the session's already-compiled model, so nothing is compiled again)."""

from __future__ import annotations

from symcurv import pipeline


def test_warm_up_bar_and_quiet(compiled, capsys):
    _, prog = compiled("tied")
    capsys.readouterr()
    pipeline.warm(prog, progress=False)
    assert capsys.readouterr().err == ""
    pipeline.warm(prog, progress=True)
    err = capsys.readouterr().err
    assert "compiling 'tied' with Numba" in err and "100%|" in err and "2/2" in err
    assert "compiled 'loss'" in err and "compiled 'grad'" in err
