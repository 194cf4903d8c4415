"""Shared pytest setup: make the helper modules in tests/ (``oracle``, ...) importable."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
