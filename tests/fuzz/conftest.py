"""Loads the ``ci`` hypothesis profile (profiles.py) unless ``--hypothesis-profile`` names
another."""

import pytest
from hypothesis import settings

from . import profiles  # noqa: F401 - registers the profiles


def pytest_configure(config):
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")


def pytest_collection_modifyitems(items):
    """A random model may leave a parameter off the objective's path, and symcurv then
    warns (UnusedParameterWarning, tested in tests/test_errors.py and beside the
    transforms); in these tests that is by construction, so the warning is not reported
    188 times."""
    for item in items:
        if "/fuzz/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("tests/fuzz"):
            item.add_marker(
                pytest.mark.filterwarnings("ignore::symcurv.errors.UnusedParameterWarning")
            )
