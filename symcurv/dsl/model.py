"""``Model``: the per-case computation a user writes, recorded as an IR graph.

Every node remembers the line of user code that made it (``origin``), so errors and
generated kernels point back at the DSL.
"""

from __future__ import annotations

import linecache
import math
import numbers
import os
import sys
import warnings
from collections.abc import Sequence

from symcurv import errors
from symcurv.dsl import energy as energy_mod
from symcurv.dsl import init as init_mod
from symcurv.ir.graph import Graph
from symcurv.ops import contraction, losses
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import REGISTRY, emit

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_origin() -> str:
    """``file.py:12: a = W @ h + b`` for the innermost frame outside symcurv."""
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PKG_DIR):
        f = f.f_back
    if f is None:
        return ""
    fname, line = f.f_code.co_filename, f.f_lineno
    src = linecache.getline(fname, line).strip()
    return f"{os.path.basename(fname)}:{line}" + (f": {src}" if src else "")


class Value:
    """A node of a model, with Python operators that add nodes to the same model."""

    __array_priority__ = 1000  # numpy scalars defer to our reflected operators

    def __init__(self, model: Model, nid: str) -> None:
        self.model, self.id = model, nid

    @property
    def node(self):
        return self.model.graph[self.id]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def name(self) -> str:
        return self.node.name

    def __repr__(self) -> str:
        return f"<symcurv value {self.node.describe()} of model '{self.model.name}'>"

    # arithmetic -> elementwise nodes
    def _bin(self, fn: str, other, reverse: bool = False) -> Value:
        other = self.model.lift(other)
        a, b = (other, self) if reverse else (self, other)
        return self.model.apply_fn(fn, [a, b])

    def __add__(self, o):
        return self._bin("add", o)

    def __radd__(self, o):
        return self._bin("add", o, True)

    def __sub__(self, o):
        return self._bin("sub", o)

    def __rsub__(self, o):
        return self._bin("sub", o, True)

    def __mul__(self, o):
        return self._bin("mul", o)

    def __rmul__(self, o):
        return self._bin("mul", o, True)

    def __truediv__(self, o):
        return self._bin("div", o)

    def __rtruediv__(self, o):
        return self._bin("div", o, True)

    def __pow__(self, o):
        if isinstance(o, int | float) and math.isfinite(o):  # z**c (ew.power_fn says why)
            return self.model.apply_fn(ew.power_fn(o).name, [self])
        return self._bin("pow", o)

    def __rpow__(self, o):
        return self._bin("pow", o, True)

    def __neg__(self):
        return self.model.apply_fn("neg", [self])

    def __pos__(self):
        return self

    def __matmul__(self, o) -> Value:
        o = self.model.lift(o)
        origin = user_origin()
        return self.model.wrap(
            contraction.matvec(self.model.graph, self.id, o.id, origin, name=f"a_{self.name}")
        )

    @property
    def T(self) -> Value:  # noqa: N802 - numpy's spelling
        return self.model.wrap(contraction.transpose(self.model.graph, self.id, user_origin()))

    # numpy: scalars defer to the operators above; any other ufunc (np.tanh(h)) would try
    # to run on a traced value, so it is refused with the DSL function to use instead
    _UFUNC_OPERATORS = {
        "add": "add",
        "subtract": "sub",
        "multiply": "mul",
        "true_divide": "div",
        "divide": "div",
        "power": "pow",
    }

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        op = self._UFUNC_OPERATORS.get(ufunc.__name__)
        if method == "__call__" and not kwargs and len(inputs) == 2 and op:
            a, b = inputs
            return self._bin(op, b) if a is self else self._bin(op, a, reverse=True)
        if method == "__call__" and ufunc.__name__ == "negative" and not kwargs:
            return -self
        name = ufunc.__name__
        dsl = {"tanh": "sc.tanh", "exp": "sc.exp", "log": "sc.log", "square": "sc.square"}
        raise errors.ModelError(
            f"numpy's {name} was applied to {self.node.describe()}: model values are traced "
            "into a graph, not computed, so numpy functions cannot run on them",
            where=user_origin(),
            fix=f"use {dsl[name]}(...)"
            if name in dsl
            else "use the sc functions (sc.tanh, sc.exp, sc.log, sc.relu, sc.sum, sc.dot, ...) "
            "or define the function with sc.elementwise(name, sympy expression)",
        )

    def _refuse(self, what: str, fix: str):
        raise errors.ModelError(
            f"{what} of {self.node.describe()}: models are traced, not executed",
            where=user_origin(),
            fix=fix,
        )

    def __getitem__(self, index):
        self._refuse(
            f"indexing [{index!r}]",
            "the DSL has no slicing: declare the pieces as separate parameters or inputs",
        )

    def __len__(self):
        self._refuse("len()", "use .shape (the per-case shape)")

    def __lt__(self, o):
        self._refuse("a comparison", "write conditions inside sc.elementwise (Heaviside, Max)")

    __le__ = __gt__ = __ge__ = __lt__

    def __bool__(self):
        raise errors.ModelError(
            f"{self.node.describe()} has no truth value: models are traced, not executed",
            where=user_origin(),
            fix="use sc.relu / Max inside an elementwise expression "
            "instead of Python if/else on values",
        )


class Model:
    """One case's computation. ``m.minimize(L)`` sets the per-case loss; the objective is
    the mean of L over a batch."""

    def __init__(self, name: str = "model") -> None:
        if not name.isidentifier():
            raise errors.ModelError(
                f"model name {name!r} is not an identifier",
                where=user_origin(),
                fix="use letters, digits and _",
            )
        self.name = name
        self.graph = Graph(name)
        self.params: dict[str, dict] = {}  # name -> {"id", "shape", "init"}
        self.inputs: dict[str, dict] = {}  # name -> {"id", "shape", "role"}
        self.loss: Value | None = None
        self.is_energy = False  # m.energy(E) rather than m.minimize(L) (dsl/energy.py)
        self.origin = user_origin()

    # -- leaves -----------------------------------------------------------------------
    def _leaf(self, op: str, name: str, shape, **extra) -> Value:
        origin = user_origin()
        if not str(name).isidentifier():
            raise errors.ModelError(
                f"{op} name {name!r} is not a Python identifier",
                where=origin,
                fix="name leaves like variables: x, W1",
            )
        if name in self.params or name in self.inputs:
            raise errors.ModelError(
                f"the name '{name}' is used twice in model '{self.name}'",
                where=origin,
                fix="give every input, target and parameter its own name",
            )
        shape = (int(shape),) if isinstance(shape, int | float) else tuple(int(s) for s in shape)
        if not shape or len(shape) > 2 or any(s <= 0 for s in shape):
            raise errors.ShapeError(
                f"{op} '{name}' has shape {shape}",
                where=origin,
                fix="give a positive width n or a (rows, cols) pair",
            )
        is_param = REGISTRY[op].binding == "theta"  # a leaf's role is its PrimitiveDef's
        if not is_param and len(shape) != 1:
            raise errors.ShapeError(
                f"{op} '{name}' must be a vector per case, got {shape}",
                where=origin,
                fix="flatten the case to a vector",
            )
        if extra.get("labels"):
            # the batch holds one class label c per case (a per-case scalar); the model
            # reads its one-hot row [c = k], recomputed inside the kernels (ops/losses.py)
            c = emit(self.graph, op, [], {"shape": (), "labels": True}, name=name, origin=origin)
            nid = losses.one_hot(self.graph, c, shape[0], f"{name}_onehot", origin)
        else:
            nid = emit(self.graph, op, [], {"shape": shape}, name=name, origin=origin)
        rec = {"id": nid, "shape": shape, **extra}
        (self.params if is_param else self.inputs)[name] = rec
        return Value(self, nid)

    def input(self, name: str, size) -> Value:
        """One case's input vector of width ``size``; the batch supplies ``(B, size)``."""
        return self._leaf("input", name, size, role="input")

    def target(self, name: str, size, labels: bool = False) -> Value:
        """One case's target, a vector of width ``size``. With ``labels=True`` the batch
        holds integer class labels of shape (B,) in 0..size-1 instead of one-hot rows; the
        target is then usable only as the target of ``sc.losses.softmax_cross_entropy``,
        which reads each label's one-hot row [c = k] inside its kernels (no B × size array
        is formed)."""
        if self.is_energy:
            energy_mod.refuse_target(self, name)
        if labels:
            return self._leaf("target", name, size, role="target", labels=True)
        return self._leaf("target", name, size, role="target")

    def param(self, name: str, shape, init: init_mod.Initializer | None = None) -> Value:
        """A parameter of ``shape`` (a vector n or a matrix (n_out, n_in)), shared by every
        case, drawn by ``init`` (default ``sc.init.normal(0.01)``); θ is the flat
        concatenation of the parameters in declaration order."""
        init = init or init_mod.normal(0.01)
        if not isinstance(init, init_mod.Initializer):
            raise errors.ModelError(
                f"init of parameter '{name}' is {init!r}",
                where=user_origin(),
                fix="use sc.init.normal(std), zeros(), constant(c), sparse(k) or glorot()",
            )
        return self._leaf("param", name, shape, init=init)

    # -- objective ----------------------------------------------------------------------
    def energy(self, e: Value) -> None:
        """Declare the per-case energy E(x; θ), an unnormalised −log density of the inputs
        (p(x) ∝ exp(−E)). The model compiles like any other (``loss`` is the mean energy,
        ``input_grad`` is ∂E/∂x); ``sc.score_matching(m)`` fits it without the normaliser.
        An energy depends on an ``m.input`` and on the parameters, and has no targets."""
        energy_mod.declare(self, e)

    def minimize(self, loss: Value) -> None:
        """Set the per-case loss (a scalar); the objective is its mean over a batch."""
        if self.is_energy:
            energy_mod.refuse_minimize(self)
        origin = user_origin()
        loss = self.lift(loss)
        if loss.shape != ():
            raise errors.ModelError(
                f"the per-case loss must be a scalar, got {loss.node.describe()}",
                where=origin,
                fix="reduce it, e.g. sc.sum(...) or a loss from sc.losses",
            )
        if self.loss is not None:
            raise errors.ModelError(
                "minimize() called twice", where=origin, fix="add the terms and call minimize once"
            )
        if not self._params_reaching(loss.id):
            # nodes made later cannot feed this one: the check is final here
            raise errors.ModelError(
                f"the objective {loss.node.describe()} does not depend on any parameter "
                "(a constant or data-only objective has nothing to optimise: its gradient "
                "and curvature are zero)",
                where=origin,
                fix="minimize a loss computed from the parameters, e.g. "
                "sc.losses.squared_error(W @ x + b, t)",
            )
        self.loss = loss

    def _params_reaching(self, nid: str) -> set[str]:
        """The parameters among ``nid``'s ancestors (networkx ancestor analysis)."""
        up = self.graph.ancestors(nid)
        return {name for name, rec in self.params.items() if rec["id"] in up}

    # -- helpers for the api -------------------------------------------------------------
    def wrap(self, nid: str) -> Value:
        """The model value of graph node ``nid`` (used by the DSL's functions)."""
        return Value(self, nid)

    def lift(self, x) -> Value:
        """``x`` as a value of this model: a value of it, or a finite Python number as a
        constant; anything else is a ModelError."""
        if isinstance(x, Value):
            if x.model is not self:
                raise errors.ModelError(
                    f"{x.node.describe()} belongs to model '{x.model.name}', not '{self.name}'",
                    where=user_origin(),
                    fix="build each model from its own inputs and parameters",
                )
            return x
        if isinstance(x, numbers.Real) and math.isfinite(x):  # numpy scalars included
            return Value(self, ew.const(self.graph, float(x), user_origin()))
        raise errors.ModelError(
            f"cannot use {x!r} ({type(x).__name__}) in model '{self.name}'",
            where=user_origin(),
            fix="combine model values with finite real numbers only",
        )

    def apply_fn(self, fn_name: str, args: Sequence[Value], name: str = "") -> Value:
        """Apply the registered elementwise function ``fn_name`` to ``args``."""
        from symcurv.symbolic import local

        origin = user_origin()
        args = [self.lift(a) for a in args]
        return Value(
            self,
            ew.apply(
                self.graph, local.FUNCTIONS[fn_name], [a.id for a in args], name=name, origin=origin
            ),
        )

    # -- the forward graph ---------------------------------------------------------------
    def forward_graph(self) -> Graph:
        """A copy of the graph with output ``objective`` = mean over the batch of the loss,
        and output ``per_case`` = the per-case loss."""
        if self.loss is None:
            raise errors.ModelError(
                f"model '{self.name}' has no loss",
                where=self.origin,
                fix="call m.minimize(per_case_loss)",
            )
        if not self.params:
            raise errors.ModelError(
                f"model '{self.name}' has no parameters",
                where=self.origin,
                fix="declare parameters with m.param",
            )
        unused = [n for n in self.params if n not in self._params_reaching(self.loss.id)]
        if unused:
            where = "; ".join(f"'{n}' at {self.graph[self.params[n]['id']].origin}" for n in unused)
            warnings.warn(
                f"model '{self.name}': parameter(s) {where} do not reach the objective; "
                "their gradient and curvature are always zero (fix: use them in the loss, "
                "or remove them)",
                errors.UnusedParameterWarning,
                stacklevel=2,
            )
        g = self.graph.copy()
        root = self.loss.id
        if g[root].batched:
            obj = emit(g, "batch_mean", [root], name="objective", origin=g[root].origin)
        else:
            obj = root
        g.outputs = {"objective": obj, "per_case": root}
        losses.check_label_uses(g)
        return g
