"""Derivatives with respect to the data: the same transforms, with the inputs as leaves.

Everything here is per case b, of the per-case scalar f_b passed to ``m.minimize`` (not
divided by B): the root is the forward graph's ``per_case`` output, seeded with 1 for
every case (``grad.unit_seed``), and every leaf differentiated is an ``m.input`` x:

    input_grad      ∂f_b/∂x_b                         reverse sweep      (grad.cotangents)
    input_hvp       (∇²_x f_b) V_b                    jvp of that sweep  (R-operator)
    input_diag_S    Re(S_{x,b})² − Im(S_{x,b})²       CP, S recursion    (curvprop)
    input_diag_TU   T_{x,b} ⊙ U_{x,b}                 CP, TU recursion
    input_bl        δ'_x of Becker & LeCun            (diag.becker_lecun)

No sum over cases appears anywhere: every value between x and f_b is per case, so a CP
estimate is unbiased for each case's own diagonal (not a rank-B sum as over θ). With
several inputs the Hessian is taken over all of them at once; its diagonal restricted to
x is diag(∇²_{xx} f_b), so one sweep serves every input. The exact diagonal is the input
HVP along each coordinate direction e_i (runtime: D products on one cached State).
"""

from __future__ import annotations

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph, Node
from symcurv.ops import elementwise as ew
from symcurv.transforms import curvprop, diag
from symcurv.transforms.grad import cotangents
from symcurv.transforms.jvp import jvp

CP_ESTIMATORS = ("S", "TU")


def data_inputs(g: Graph) -> list[Node]:
    """The ``m.input`` leaves (never targets), in declaration order."""
    return g.leaves("input")


def _setup(forward: Graph) -> tuple[Graph, str, list[Node]]:
    g = forward.copy()
    xs = data_inputs(g)
    root = g.outputs.get("per_case")
    if not xs or root is None or not g[root].batched:
        raise errors.NotApplicableError(
            f"model '{g.name}' has no per-case input to differentiate with respect to",
            fix="declare the data with m.input(name, width) and minimize a per-case loss",
        )
    return g, root, xs


def _zero_like(g: Graph, x: Node) -> str:
    """0 per case, shaped like input x (f does not depend on x)."""
    return ew.broadcast_to(g, ew.const(g, 0.0, x.origin), x.shape, True, x.origin)


def _finish(g: Graph, result: str, values: dict[str, str | None], xs: list[Node]) -> Graph:
    g.outputs = {}
    for x in xs:
        v = values.get(x.id)
        g.set_output(outputs.per_case(result, x.name), v if v is not None else _zero_like(g, x))
    return g


def input_grad_graph(forward: Graph) -> Graph:
    """Outputs ``input_grad:<x>`` = ∂f_b/∂x_b, (B, |x|), for every input x."""
    g, root, xs = _setup(forward)
    cot = cotangents(g, root, [x.id for x in xs])
    return _finish(g, "input_grad", cot, xs)


def add_input_directions(g: Graph, xs: list[Node]) -> dict[str, str]:
    """One per-case ``input_direction`` leaf per input (named ``V_<input>``)."""
    out = {}
    for x in xs:
        d = g.add_node(
            "input_direction",
            [],
            x.shape,
            True,
            {"input": x.name, "shape": list(x.shape)},
            name=f"V_{x.name}",
            origin=x.origin,
        )
        out[x.id] = d.id
    return out


def input_hvp_graph(forward: Graph) -> Graph:
    """Outputs ``input_hvp:<x>`` = Σ_y (∇²_{x,y} f_b) V_{y,b} over every input y: with the
    other inputs' directions zero, (∇²_x f_b) V_b."""
    g, root, xs = _setup(forward)
    cot = cotangents(g, root, [x.id for x in xs])
    dirs = add_input_directions(g, xs)
    grads = [cot[x.id] for x in xs if cot.get(x.id) is not None]
    tangents = jvp(g, dirs, grads)
    return _finish(g, "input_hvp", {x.id: tangents.get(cot.get(x.id)) for x in xs}, xs)


def input_cp_graph(forward: Graph, estimator: str) -> Graph:
    """Outputs ``input_diag_<estimator>:<x>``: one CP draw of diag(∇²_x f_b) per case,
    given the noise leaves ``z0, z1, ...`` (unbiased for every case)."""
    if estimator not in CP_ESTIMATORS:
        raise errors.ModelError(
            f"unknown CP estimator {estimator!r} for the data",
            fix=f"choose one of {', '.join(CP_ESTIMATORS)}",
        )
    _, _, xs = _setup(forward)
    sweep = curvprop.CurvatureSweep(forward, estimator, "per_case", wrt=[x.id for x in xs])
    est = sweep.estimate()
    return _finish(sweep.g, f"input_diag_{estimator}", est, data_inputs(sweep.g))


def input_becker_lecun_graph(forward: Graph) -> Graph:
    """Outputs ``input_bl:<x>``: Becker-LeCun's deterministic (biased) diagonal of
    ∇²_x f_b per case; exact when one nonlinear layer separates x from a linear sum."""
    g, root, xs = _setup(forward)
    d = diag.becker_lecun(g, root, [x.id for x in xs])
    return _finish(g, "input_bl", d, xs)
