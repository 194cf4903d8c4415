"""Write docs/api.md, the API reference, from the docstrings and signatures of the public API.

    python docs/make_api.py          # rewrite docs/api.md
    python docs/make_api.py --check  # exit 1 if docs/api.md is stale (what the test checks)

The public API is what ``symcurv/__init__.py`` re-exports (``symcurv.__all__``), the
public functions and classes of its modules (``sc.losses``, ``sc.init``, ``sc.testing``,
``sc.errors``, ``sc.optim``), and the public methods and properties of ``Program``,
``State`` and every exported class. Each entry is the signature as ``inspect.signature``
gives it and the docstring as ``inspect.getdoc`` cleans it: the stdlib machinery pydoc
itself uses, here writing markdown that sits beside the other docs (pdoc and pydoc write
HTML or plain text). ``public_entries()`` is the list the test checks: every entry has a
docstring and a heading in docs/api.md, and the file is up to date.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

HEADER = """# API reference

Generated from the docstrings by `python docs/make_api.py` (do not edit by hand; the test
`tests/test_api_reference.py` fails when this file is stale or a public name has no
docstring). The guides: [dsl.md](dsl.md), [curvature.md](curvature.md),
[optim.md](optim.md), [distributed.md](distributed.md).
"""

# (section title, module, names; None = the module's public functions and classes)
SECTIONS = [
    ("symcurv", "symcurv", "__all__"),
    ("symcurv.losses", "symcurv.dsl.losses", None),
    ("symcurv.init", "symcurv.dsl.init", None),
    ("symcurv.optim", "symcurv.optim", "__all__"),
    ("symcurv.distributed", "symcurv.distributed", "__all__"),
    ("symcurv.testing", "symcurv.testing", None),
    ("symcurv.errors", "symcurv.errors", None),
]
# classes whose members are documented although they are reached, not imported
REACHED = [
    ("Program (`sc.compile`, `sc.load`)", "symcurv.runtime.program", "Program"),
    ("State (`prog.linearize`)", "symcurv.runtime.state", "State"),
]
# sc.<module>: its own section
MODULES = {"losses", "init", "testing", "optim", "errors", "distributed"}


def _module_members(mod) -> list[str]:
    """Public functions and classes defined in ``mod`` (not imported into it)."""
    return [
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and getattr(v, "__module__", None) == mod.__name__
    ]


def _class_members(cls) -> list[str]:
    """Public methods and properties defined by ``cls`` or a symcurv base class."""
    names = []
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("symcurv"):
            continue
        for n, v in vars(klass).items():
            if n.startswith("_") or n in names:
                continue
            if inspect.isfunction(v) or isinstance(v, property | staticmethod | classmethod):
                names.append(n)
    return names


class _Annotation:
    """A string annotation (``from __future__ import annotations``) shown unquoted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _plain(annotation):
    return _Annotation(annotation) if isinstance(annotation, str) else annotation


def _signature(obj, name: str) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = [p.replace(annotation=_plain(p.annotation)) for p in sig.parameters.values()]
    sig = sig.replace(parameters=params, return_annotation=_plain(sig.return_annotation))
    return f"{name}{sig}"


def public_entries() -> list[tuple[str, object]]:
    """``(qualified name, object)`` for every documented name, in reference order."""
    import symcurv

    out: list[tuple[str, object]] = []

    def add_class(qual: str, cls) -> None:
        out.append((qual, cls))
        for m in _class_members(cls):
            out.append((f"{qual}.{m}", inspect.getattr_static(cls, m)))

    for _title, modname, names in SECTIONS:
        mod = importlib.import_module(modname)
        prefix = "sc" if modname == "symcurv" else "sc." + _title.split(".", 1)[1]
        if names == "__all__":
            names = list(mod.__all__)
        else:
            names = _module_members(mod)
        for n in names:
            if n in ("__version__",) or (modname == "symcurv" and n in MODULES):
                continue
            obj = getattr(mod, n) if modname != "symcurv" else getattr(symcurv, n)
            if inspect.isclass(obj):
                add_class(f"{prefix}.{n}", obj)
            else:
                out.append((f"{prefix}.{n}", obj))
    for _title, modname, cname in REACHED:
        add_class(cname, getattr(importlib.import_module(modname), cname))
    return out


def _doc(obj) -> str:
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    return inspect.getdoc(obj) or ""


def _entry(qual: str, obj, member: bool) -> str:
    short = qual.rsplit(".", 1)[-1]
    if isinstance(obj, property):
        sig = f"{short}  # property"
    else:
        fn = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
        sig = _signature(fn, short)
        if sig.startswith(f"{short}(self, ") or sig.startswith(f"{short}(self)"):
            sig = sig.replace("(self, ", "(", 1).replace("(self)", "()", 1)
    level = "####" if member else "###"
    return f"{level} `{qual}`\n\n```python\n{sig}\n```\n\n{_doc(obj)}\n"


def render() -> str:
    entries = public_entries()
    parts = [HEADER]
    titles = [t for t, _, _ in SECTIONS] + [t for t, _, _ in REACHED]
    prefixes = ["sc"] + ["sc." + t.split(".", 1)[1] for t, _, _ in SECTIONS[1:]]
    prefixes += [c for _, _, c in REACHED]
    done = set()
    classes = {q for q, o in entries if inspect.isclass(o)}
    for title, prefix in zip(titles, prefixes):
        mine = [
            (q, o)
            for q, o in entries
            if q not in done
            and (
                q.startswith(prefix + ".")
                if prefix.startswith("sc")
                else q == prefix or q.startswith(prefix + ".")
            )
            and (prefix != "sc" or not any(q.startswith(p + ".") for p in prefixes[1:]))
        ]
        if not mine:
            continue
        parts.append(f"## {title}\n")
        for q, o in mine:
            done.add(q)
            parts.append(_entry(q, o, q.rsplit(".", 1)[0] in classes))
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if docs/api.md differs, write nothing"
    )
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(public_entries())} entries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
