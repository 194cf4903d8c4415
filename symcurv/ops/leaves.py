"""Leaves: per-case inputs and targets, parameters, and scalar constants."""

from __future__ import annotations

import numpy as np
import sympy

from symcurv.ops import lowering as lw
from symcurv.ops.registry import PrimitiveDef, register


def _leaf_infer(batched: bool):
    def infer(inputs, attrs):
        return tuple(attrs["shape"]), batched

    return infer


def _attr_infer(inputs, attrs):  # leaves whose batchedness is an attribute
    return tuple(attrs["shape"]), bool(attrs["batched"])


def _leaf_impl(node, args, arg_nodes):  # leaves are bound by the interpreter, never run
    raise RuntimeError(f"leaf {node.name} has no value bound")


register(
    PrimitiveDef(
        "input",
        "leaf",
        "leaf",
        _leaf_infer(True),
        _leaf_impl,
        binding="batch",
        doc="x: one case's input vector (a batch has cases as rows)",
    )
)
register(
    PrimitiveDef(
        "target",
        "leaf",
        "leaf",
        _leaf_infer(True),
        _leaf_impl,
        binding="batch",
        doc="t: one case's target",
    )
)
register(
    PrimitiveDef(
        "param",
        "leaf",
        "leaf",
        _leaf_infer(False),
        _leaf_impl,
        binding="theta",
        doc="θ block: a parameter, shared by every case",
    )
)
register(
    PrimitiveDef(
        "direction",
        "leaf",
        "leaf",
        _leaf_infer(False),
        _leaf_impl,
        binding="v",
        doc="v block: the direction of a curvature product (H v, G v), shaped like "
        "parameter attr['param'] and read from the flat vector v as θ is",
    )
)
register(
    PrimitiveDef(
        "input_direction",
        "leaf",
        "leaf",
        _leaf_infer(True),
        _leaf_impl,
        binding="direction",
        doc="V: the per-case direction of an input-Hessian product (∇²_x f_b) V_b, shaped "
        "like input attr['input'] (one row per case, bound by the runtime like CP noise)",
    )
)
register(
    PrimitiveDef(
        "noise",
        "leaf",
        "leaf",
        _attr_infer,
        _leaf_impl,
        binding="noise",
        doc="z: a random vector of Curvature Propagation (E[z zᵀ] = I), drawn by the runtime "
        "on every call (Rademacher or Gaussian); per case when attr['batched']",
    )
)
register(
    PrimitiveDef(
        "cached",
        "leaf",
        "leaf",
        _attr_infer,
        _leaf_impl,
        binding="cached",
        doc="a value computed once per (θ, batch) by a program's static part (passes/split.py) "
        "and read by its dynamic part (State: no forward recomputation per product)",
    )
)


def _const_impl(node, args, arg_nodes):
    return np.asarray(node.attr("value"), dtype=np.float64)


register(
    PrimitiveDef(
        "const",
        "leaf",
        "map",
        lambda inputs, attrs: ((), False),
        _const_impl,
        vjp=lambda g, n, cot, needs: [],
        jvp=lambda g, n, t: None,
        scalar=lambda node, syms: sympy.Float(node.attr("value")),
        lower=lambda g, n: lw.Fill(n.attr("value")),  # when a non-map kernel reads it
        doc="c: a scalar literal (inlined into every fused map that uses it)",
    )
)
