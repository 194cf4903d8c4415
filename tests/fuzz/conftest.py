"""Loads the ``ci`` hypothesis profile (profiles.py) unless ``--hypothesis-profile`` names
another."""

from hypothesis import settings

from . import profiles  # noqa: F401 - registers the profiles


def pytest_configure(config):
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")
