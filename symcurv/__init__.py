"""symcurv: compile per-case models into inspectable second-order kernels.

The public API is re-exported here. Importing ``symcurv`` is cheap and never imports
sympy: the DSL (which needs sympy) loads on first use of ``sc.Model``, ``sc.tanh``, ...,
while ``sc.load`` only needs numpy and numba.
"""

from __future__ import annotations

import importlib

from symcurv import errors  # noqa: F401
from symcurv.errors import SymcurvError  # noqa: F401

__version__ = "0.1.0"

_LAZY = {
    # name: (module, attribute or None for the module itself)
    "Model": ("symcurv.dsl.model", "Model"),
    "elementwise": ("symcurv.dsl.api", "elementwise"),
    "tanh": ("symcurv.dsl.api", "tanh"),
    "logistic": ("symcurv.dsl.api", "logistic"),
    "exp": ("symcurv.dsl.api", "exp"),
    "log": ("symcurv.dsl.api", "log"),
    "softplus": ("symcurv.dsl.api", "softplus"),
    "square": ("symcurv.dsl.api", "square"),
    "relu": ("symcurv.dsl.api", "relu"),
    "sum": ("symcurv.dsl.api", "sum"),
    "dot": ("symcurv.dsl.api", "dot"),
    "softmax": ("symcurv.dsl.api", "softmax"),
    "logsumexp": ("symcurv.dsl.api", "logsumexp"),
    "conv2d": ("symcurv.dsl.api", "conv2d"),
    "normalize_rows": ("symcurv.dsl.api", "normalize_rows"),
    "losses": ("symcurv.dsl.losses", None),
    "init": ("symcurv.dsl.init", None),
    "score_matching": ("symcurv.dsl.score_matching", "score_matching"),
    "compile": ("symcurv.pipeline", "compile"),
    "denoise": ("symcurv.imaging", "denoise"),
    "super_resolve": ("symcurv.imaging", "super_resolve"),
    "block_average": ("symcurv.imaging", "block_average"),
    "psnr": ("symcurv.imaging", "psnr"),
    "load": ("symcurv.runtime.build", "load"),
    "testing": ("symcurv.testing", None),
    "optim": ("symcurv.optim", None),
}

__all__ = ["SymcurvError", "errors", "__version__", *_LAZY]


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'symcurv' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
