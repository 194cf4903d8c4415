"""One progress bar for the whole library (the build's warm-up, ``fit``): tqdm.

``tqdm.auto`` draws a widget in notebooks and a bar on a terminal. Written to a log file or
a CI log (stderr not a terminal), a bar redrawn ten times a second leaves a wall of
carriage-return updates; there it is redrawn at most every ``LOG_INTERVAL`` seconds.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal


def bar(iterable=None, *, enabled: bool = True, interval: float = 0.1, **kwargs) -> tqdm:
    """A tqdm bar on stderr, ``disable``d unless ``enabled``, redrawn at most every
    ``interval`` seconds on a terminal (``LOG_INTERVAL`` in a log)."""
    stream = sys.stderr
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(
        iterable,
        disable=not enabled,
        file=stream,
        mininterval=interval if is_terminal else max(interval, LOG_INTERVAL),
        dynamic_ncols=True,
        **kwargs,
    )
