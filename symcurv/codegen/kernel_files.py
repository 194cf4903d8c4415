"""Content-addressed kernel files: every distinct compiled kernel of a build, once.

Most kernels are the same loop in many programs: the forward maps of ``loss`` come back in
``grad``, ``hvp``, every CP sweep and ``input_grad``; the backward maps of ``grad`` in
``hvp``'s static part and in ``sum_sq_grad``. In the autoencoder's 28 modules there are
535 compiled kernels but 149 distinct ones, and Numba spends ~0.15 s CPU on each
(docs/benchmarks.md, "Session 11: cold builds"). So a program's module keeps its driver
and the comment block of each kernel, and takes the kernel itself from
``kernels/shared/<label>_<hash>.py``: one file per distinct kernel, named after the
sha256 of its text. The same loop in two programs, or in two builds, is the same file, so
Numba compiles it once and its cache (``kernels/shared/__pycache__``) serves every
program; a changed loop is another file, so a stale kernel is never loaded in its place.

Two kernels are the same when their text is, up to names: the kernel's own name, its
arrays (``s3`` in one program is ``s7`` in another; in the shared file the arrays read are
``x0, x1, …`` and those written ``y0, …``, in the driver's argument order) and its
scalar function's arguments (DSL names such as ``a_W0``; there ``a0, a1, …``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from symcurv.ops.elementwise import B_SYMBOL, INDEX_SYMBOL

SHARED = "shared"  # the folder beside the program modules: kernels/shared/<name>.py
HASH_DIGITS = 12  # hex digits of sha256 in a kernel's name (48 bits: no collision in a build)
_PLACEHOLDER = "KERNEL_NAME"
_DEF = re.compile(r"^def (\w+)\((.*)\):$")
_DOC = re.compile(r'^\s+""".*"""$')
_KEPT_ARGS = {B_SYMBOL.name, INDEX_SYMBOL.name}  # batch size and feature index keep their names


@dataclasses.dataclass
class Emitted:
    """A program module's text and the shared kernel files it takes its kernels from."""

    text: str
    shared: dict[str, str]  # name -> text of kernels/shared/<name>.py


@dataclasses.dataclass
class Compiled:
    """One compiled kernel as the program's emitter printed it: helper functions (a map's
    scalar formulas) first, the kernel last, each a list of lines from its decorator on."""

    name: str  # the kernel's name in the program (k3_map_logistic_1)
    functions: list[list[str]]
    writes: set[str]  # the driver variables it writes


def label(kernel_name: str) -> str:
    """``k3_map_logistic_1`` -> ``map_logistic``: the kind and first value, no indices."""
    return re.sub(r"_\d+$", "", re.sub(r"^k\d+_", "", kernel_name))


def _signature(lines: list[str]) -> tuple[str, list[str]]:
    """(name, arguments) of the function whose decorated source is ``lines``."""
    m = next(_DEF.match(ln) for ln in lines if _DEF.match(ln))
    return m.group(1), [a.strip() for a in m.group(2).split(",") if a.strip()]


def _rename(lines: list[str], names: dict[str, str], suffixed: dict[str, str]) -> list[str]:
    """Rename whole identifiers (never an attribute after a dot): ``names`` exactly, and
    the derived names of ``suffixed`` (``flat_s6`` -> ``flat_x0`` for s6 -> x0)."""

    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok in names:
            return names[tok]
        for old, new in sorted(suffixed.items(), key=lambda kv: -len(kv[0])):
            if tok.endswith("_" + old):
                return tok[: -len(old)] + new
        return tok

    ident = re.compile(r"(?<![.\w])[A-Za-z_]\w*")
    return [ident.sub(one, ln) for ln in lines]


def _fresh(prefixes: tuple[str, ...], taken: set[str], n: int) -> str:
    """The first prefix whose names ``<prefix>0 … <prefix>n-1`` the text does not use."""
    for p in prefixes:
        if not any(f"{p}{i}" in taken for i in range(n)):
            return p
    raise AssertionError(f"no free argument names among {prefixes}")  # pragma: no cover


def canonical(kernel: Compiled) -> tuple[list[str], list[str], list[str]]:
    """The kernel's functions with its own names replaced (see the module docstring),
    its name a placeholder; the driver variables it takes after B, in order; and their
    names in the shared file."""
    *helpers, main = kernel.functions
    name, args = _signature(main)
    params = [a for a in args if a != "B"]
    tokens = set(re.findall(r"\w+", "\n".join(ln for f in kernel.functions for ln in f)))
    tokens -= set(params)
    reads = [p for p in params if p not in kernel.writes]
    writes = [p for p in params if p in kernel.writes]
    rx, wx = _fresh(("x", "in_"), tokens, len(reads)), _fresh(("y", "out_"), tokens, len(writes))
    arrays = {p: f"{rx}{i}" for i, p in enumerate(reads)}
    arrays.update({p: f"{wx}{i}" for i, p in enumerate(writes)})
    own = {name: _PLACEHOLDER}
    for i, h in enumerate(helpers):
        own[_signature(h)[0]] = f"f_{_PLACEHOLDER}" + (f"_{i}" if i else "")
    lines: list[str] = []
    for h in helpers:
        hname, hargs = _signature(h)
        renamed = [a for a in hargs if a not in _KEPT_ARGS]
        args_map = {a: f"a{i}" for i, a in enumerate(renamed)}
        body = [ln for ln in h if not _DOC.match(ln)]  # its docstring names program nodes
        body = _rename(body, {**own, **args_map}, {})
        at = next(i for i, ln in enumerate(body) if ln.startswith("def "))
        doc = f'    """The scalar formulas of {_PLACEHOLDER} (one element)."""'
        lines += [*body[: at + 1], doc, *body[at + 1 :], "", ""]
    lines += _rename(main, {**own, **arrays}, arrays)
    return lines, params, [arrays[p] for p in params]


def shared_file(kernel: Compiled, header: list[str]) -> tuple[str, str, list[str]]:
    """(name, text, driver variables after B) of ``kernel``'s shared file. ``header``:
    the lines between the file's docstring and its functions (imports, PARALLEL)."""
    body, params, args = canonical(kernel)
    doc = [
        f'"""symcurv kernel {_PLACEHOLDER}, shared by every program of the build that runs it.',
        "",
        "Named after the sha256 of this file's text (its name left out): the same kernel in",
        "two programs is this one file, compiled once; a changed kernel is another file.",
        "Arguments, in the order the program's driver passes them (x: read, y: written):",
        f"    B, {', '.join(args)}" if args else "    B",
        "The program module's comment block above each call names the buffers.",
        "",
        "Do not edit: sc.load() checks this file's sha256 against manifest.json.",
        '"""',
    ]
    text = "\n".join([*doc, "", *header, "", "", *body]).rstrip() + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]
    name = f"{label(kernel.name)}_{digest}"
    return name, text.replace(_PLACEHOLDER, name), params


def files(rel: str, emitted: Emitted | str) -> dict[str, str]:
    """The build's files of one program module written at ``rel`` (``kernels/grad.py``):
    the module and its shared kernels (an emitter without shared kernels gives a str)."""
    if isinstance(emitted, str):
        return {rel: emitted}
    folder = rel.rsplit("/", 1)[0] + f"/{SHARED}"
    return {rel: emitted.text, **{f"{folder}/{n}.py": t for n, t in emitted.shared.items()}}
