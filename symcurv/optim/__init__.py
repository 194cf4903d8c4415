"""Optimizers that drive the compiled programs, and the training loop they share.

``sc.optim.HessianFree`` (Martens 2010), ``KFAC`` (Martens & Grosse 2015), ``ACP`` and
``CenteredSGD`` (George 2017), the baselines ``SGD`` and ``Adam``, and
``fit(prog, opt, data, iterations=...)`` returning a ``FitResult`` (θ and the
per-iteration history). See docs/optim.md and docs/kfac.md.
"""

from symcurv.optim.acp import ACP
from symcurv.optim.centered import CenteredSGD
from symcurv.optim.cg import CGResult, conjugate_gradient, kept_indices, martens_stop
from symcurv.optim.hessian_free import HessianFree, backtrack, levenberg_marquardt
from symcurv.optim.kfac import KFAC
from symcurv.optim.sgd import SGD, Adam
from symcurv.optim.training import FitResult, Optimizer, OptimizerError, Sampler, fit

__all__ = [
    "ACP",
    "Adam",
    "CGResult",
    "CenteredSGD",
    "FitResult",
    "HessianFree",
    "KFAC",
    "Optimizer",
    "OptimizerError",
    "SGD",
    "Sampler",
    "backtrack",
    "conjugate_gradient",
    "fit",
    "kept_indices",
    "levenberg_marquardt",
    "martens_stop",
]
