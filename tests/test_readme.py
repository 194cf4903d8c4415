"""The README's setup commands; its quickstart blocks run in tests/test_docs_runnable.py."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert lines == ['pip install -e ".[dev]" && symcurv demo', "python -m pytest"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && symcurv demo' in ci and "\npython -m pytest\n" in ci


# the quickstart itself runs in tests/test_docs_runnable.py (marked ```python runnable)
