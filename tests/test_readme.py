"""The README's quickstart is code users paste: run it as written (in a temp directory)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert lines == ['pip install -e ".[dev]" && symcurv demo', "python -m pytest"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && symcurv demo' in ci and "\npython -m pytest\n" in ci


def test_quickstart_runs(tmp_path, monkeypatch):
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    g = scope["prog"].unflatten(scope["g"])
    assert g["W0"].shape == (20, 256) and abs(g["W0"]).sum() > 0
    assert 0 < scope["loss"] < 10
