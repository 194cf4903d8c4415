"""A program's driver compiled: the same ``run`` of the generated module, run by Numba.

Called from Python, the driver pays Numba's dispatch on every kernel it calls (about 0.45
µs a call; 42 calls in cp_net's hvp, about half of its 36 µs at B = 1: docs/benchmarks.md,
"Session 18"). Compiled, each call is a machine call. But Numba compiles a function
together with every function it calls: their code is linked into its module and
optimised again (codegen/cpu.py says why the driver was left in Python) — ``gemm``, with
symcurv's product kernels in it, cost 0.6 s per operand layout that way, and a kernel
optimised again inside another function need not keep its bits.

So the compiled driver calls each compiled function at its address, the very machine code
the Python driver runs:

- ``compile_driver(module)`` compiles ``module.run`` with each compiled function it names
  (the kernels, ``gemm``, the guards, ``vm.logsumexp_rows``) bound to an intrinsic
  (``_at_address``) that finds the function's address in a table and calls it there in
  Numba's own calling convention — the call the dispatcher makes from Python, less the
  dispatch;
- the table (``TABLE``: per entry an address and the key of the (function, argument
  types) it is for, found within ``PROBES`` entries of the key's place) lives in this
  process's memory and is reached through a symbol (``llvm.add_symbol``, as
  blas_threads.py reaches the BLAS), so the cached driver finds it in every process;
  ``register`` writes into it the overloads the driver's functions have in this process
  (once the Python driver has run, every overload the compiled one calls is loaded);
- for each argument typed as an F-ordered matrix, the overload is picked at run time by
  numpy's flags, as Numba's dispatch from Python does: a one-row or one-column view
  (``W.reshape((1, n)).T``) is C-contiguous too and dispatches to the C-typed overload
  (for ``gemm``: another product kernel, so another rounding, were it not so);
- an address not in the table raises ``MissingAddress`` before anything runs at it
  (runtime/program.py then runs the Python driver, which loads that overload, and
  registers it again).

The generated file is unchanged; the compiled driver is cached beside it like its kernels.
"""

from __future__ import annotations

import hashlib
import types as pytypes

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

CAPACITY = 1 << 12  # table entries (a driver calls a few tens of (function, types) pairs)
PROBES = 8  # entries tried from a key's place (linear probing, unrolled in the driver)
TABLE = np.zeros((CAPACITY, 2), dtype=np.int64)  # (address, key) per entry; key 0: empty
_SYMBOL = "symcurv_driver_addresses"
llvm.add_symbol(_SYMBOL, TABLE.ctypes.data)


class MissingAddress(LookupError):
    """A compiled driver met a (function, argument types) pair not in the table."""


# -- keys: equal in every process (the cached driver holds them as constants) ----------------
def _stable_key(text: str) -> int:
    """A positive int63 of ``text`` (0 marks an empty entry)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1 or 1


def function_key(f: Dispatcher) -> int:
    """The key of compiled function ``f``: its module and name (a shared kernel's module
    is named after its text, codegen/kernel_files.py)."""
    return _stable_key(f"{f.py_func.__module__}.{f.py_func.__qualname__}")


def call_key(fkey: int, argtys) -> int:
    """The key of function ``fkey`` called with Numba types ``argtys``."""
    return _stable_key(f"{fkey}({', '.join(map(str, argtys))})")


def register(functions) -> None:
    """Write the address of every overload of ``functions`` (dispatchers) into the table."""
    for f in functions:
        fkey = function_key(f)
        for sig, cres in list(f.overloads.items()):
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            _insert(call_key(fkey, sig), address)


def _insert(key: int, address: int) -> None:
    for p in range(PROBES):
        at = (key + p) % CAPACITY
        if TABLE[at, 1] in (0, key):
            TABLE[at, 0] = address  # the address first: a driver reading the entry in
            TABLE[at, 1] = key  # another thread sees the key only with its address
            return
    raise RuntimeError(f"compiled drivers' address table full near entry {key % CAPACITY}")


# -- the call at an address --------------------------------------------------------------
def _find(builder, key):
    """The address stored for ``key`` (an i64 value) within PROBES entries, else 0."""
    i64 = ir.IntType(64)
    table = builder.module.globals.get(_SYMBOL)
    if table is None:  # declared here, defined by llvm.add_symbol above
        table = ir.GlobalVariable(builder.module, ir.ArrayType(i64, 2 * CAPACITY), _SYMBOL)
        table.linkage = "external"
    address = i64(0)
    for p in reversed(range(PROBES)):
        at = builder.urem(builder.add(key, i64(p)), i64(CAPACITY))
        entry = builder.gep(table, [i64(0), builder.mul(at, i64(2))])
        stored = builder.load(builder.gep(entry, [i64(1)]))
        address = builder.select(
            builder.icmp_signed("==", stored, key), builder.load(entry), address
        )
    return address


def _f_matrix(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 2 and t.layout == "F"


def _layout_choices(argtys) -> tuple[list[int], list[tuple]]:
    """(the arguments typed as F-ordered matrices, the argument types with each subset of
    them typed C instead; choice n types argument f_args[b] C where bit b of n is set)."""
    f_args = [i for i, t in enumerate(argtys) if _f_matrix(t)]
    choices = []
    for choice in range(1 << len(f_args)):
        tys = list(argtys)
        for bit, i in enumerate(f_args):
            if choice >> bit & 1:
                tys[i] = argtys[i].copy(layout="C")
        choices.append(tuple(tys))
    return f_args, choices


def _one_row_or_column(context, builder, argty, value):
    """Is matrix ``value`` one row or one column (C- and F-contiguous alike, for numpy)?"""
    shape = context.make_array(argty)(context, builder, value).shape
    one = ir.IntType(64)(1)
    rows, cols = (builder.extract_value(shape, d) for d in (0, 1))
    return builder.or_(builder.icmp_signed("==", rows, one), builder.icmp_signed("==", cols, one))


def _call_key(context, builder, f_args, argtys, values, keys):
    """The call key of the layouts numpy's flags give the F-typed arguments now."""
    i64 = ir.IntType(64)
    choice = i64(0)
    for bit, i in enumerate(f_args):
        c_too = _one_row_or_column(context, builder, argtys[i], values[i])
        choice = builder.or_(choice, builder.shl(builder.zext(c_too, i64), i64(bit)))
    key = i64(keys[0])
    for n, k in enumerate(keys[1:], 1):
        key = builder.select(builder.icmp_unsigned("==", choice, i64(n)), i64(k), key)
    return key


def _args(args) -> tuple:
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], types.BaseTuple) else args


def _at_address(f: Dispatcher):
    """An intrinsic that calls ``f`` at the address of the overload Numba's dispatch from
    Python would pick for these arguments (``MissingAddress`` if the table has none)."""
    fkey = function_key(f)
    name = f.py_func.__qualname__

    @intrinsic
    def call(typingctx, *args):
        argtys = _args(args)
        f.compile(argtys)  # (or loaded from its cache) for its return type
        restype = f.overloads[argtys].signature.return_type
        f_args, choices = _layout_choices(argtys)
        keys = [call_key(fkey, tys) for tys in choices]

        def codegen(context, builder, signature, llargs):
            values = [builder.extract_value(llargs[0], i) for i in range(len(argtys))]
            address = _find(builder, _call_key(context, builder, f_args, argtys, values, keys))
            with builder.if_then(builder.icmp_signed("==", address, address.type(0)), False):
                context.call_conv.return_user_exc(builder, MissingAddress, (name,))
            fnty = context.call_conv.get_function_type(restype, argtys)
            fn = builder.inttoptr(address, fnty.as_pointer())
            status, out = context.call_conv.call_function(builder, fn, restype, argtys, values)
            with builder.if_then(status.is_error, likely=False):
                context.call_conv.return_status_propagate(builder, status)
            return out

        return restype(types.StarArgTuple.from_types(argtys)), codegen

    return call


# -- the driver ------------------------------------------------------------------------------
def compiled_names(module: pytypes.ModuleType) -> dict[str, Dispatcher]:
    """The compiled functions ``module.run`` names, by the name it loads: its globals, and
    attributes of the modules it names (``logsumexp_rows`` of ``vm``)."""
    names, found = module.run.__code__.co_names, {}
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, Dispatcher):
            found[name] = value
        elif isinstance(value, pytypes.ModuleType):
            found |= {n: f for n in names if isinstance(f := getattr(value, n, None), Dispatcher)}
    return found


def driver_functions(module: pytypes.ModuleType) -> list[Dispatcher]:
    """The compiled functions ``module.run`` calls, once each."""
    return list(dict.fromkeys(compiled_names(module).values()))


def compile_driver(module: pytypes.ModuleType) -> Dispatcher:
    """``module.run`` as a Numba dispatcher (cached beside the module), each compiled
    function it calls bound to its ``_at_address`` intrinsic."""
    run, compiled = module.run, compiled_names(module)
    names = dict(vars(module))
    for name in run.__code__.co_names:
        value = names.get(name)
        if isinstance(value, Dispatcher):
            names[name] = _intrinsic(value)
        elif isinstance(value, pytypes.ModuleType) and any(
            isinstance(getattr(value, n, None), Dispatcher) for n in compiled
        ):
            names[name] = _module_of_intrinsics(value, compiled)
    f = pytypes.FunctionType(run.__code__, names, run.__name__, run.__defaults__)
    f.__qualname__, f.__module__ = run.__qualname__, module.__name__
    return njit(cache=True)(f)


_INTRINSICS: dict[int, object] = {}


def _intrinsic(f: Dispatcher):
    """One intrinsic per function and process (every driver shares it)."""
    key = function_key(f)
    if key not in _INTRINSICS:
        _INTRINSICS[key] = _at_address(f)
    return _INTRINSICS[key]


def _module_of_intrinsics(
    module: pytypes.ModuleType, compiled: dict[str, Dispatcher]
) -> pytypes.ModuleType:
    """``module`` (``vm``) as the compiled driver sees it: its functions among ``compiled``
    replaced by their intrinsics, the rest as it is."""
    proxy = pytypes.ModuleType(module.__name__)
    proxy.__dict__.update(vars(module))
    for n, f in compiled.items():
        if getattr(module, n, None) is f:
            setattr(proxy, n, _intrinsic(f))
    return proxy
