"""Hypothesis profiles of the random-model tests (issue 20).

* ``ci`` (the default, loaded by conftest.py): derandomized, so every run checks the same
  fixed set of models, with few examples: the whole of tests/fuzz takes a few minutes on a
  2-core machine;
* ``long``: ``python -m pytest tests/fuzz --hypothesis-profile long`` draws many fresh
  models (and keeps failures in hypothesis's example database for the next run).
"""

from hypothesis import HealthCheck, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=None,  # timings vary with the load of a shared machine
    suppress_health_check=_SLOW,
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    suppress_health_check=_SLOW,
    print_blob=True,
)


def compiled_examples() -> int:
    """Examples of the compiled tests, which cost 5-30 s of Numba time per program: a
    twenty-fifth of the profile's (4 in ci, 16 in long)."""
    return max(3, settings.default.max_examples // 25)
