"""Primitive ops. Importing this package registers every op family in ``REGISTRY``."""

from symcurv.ops import contraction, conv, elementwise, leaves, losses, reduce  # noqa: F401
from symcurv.ops.registry import REGISTRY, PrimitiveDef, emit  # noqa: F401
