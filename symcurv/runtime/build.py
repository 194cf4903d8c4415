"""Build directories: write, verify and load them.

A build directory holds the generated kernel sources (``kernels/<program>.py``),
``manifest.json`` (versions, backend, dtype, parameter layout, programs, sha256 of every
generated file, and the sha256 of its own canonical content, so that a hand-edited
manifest is refused like an edited kernel), ``graph.json`` (the IR of the forward graph
and of every program, enough to draw them without re-deriving) and Numba's on-disk cache
(``kernels/__pycache__``).
``load`` verifies every hash BEFORE importing anything and refuses a tampered, partial or
mismatched build. Numba itself revalidates its cache against each source file's stamp, so a
stale cache is recompiled, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from symcurv import errors
from symcurv.runtime.program import Program

MANIFEST = "manifest.json"
GRAPHS = "graph.json"
FORMAT = 2  # 2: typed outputs, extras with a role, sum_sq_grad computes Σ_b ∇f_b² itself,
# and the manifest carries the hash of its own content
SELF_HASH = "manifest_sha256"
BACKENDS = ("cpu", "cuda")  # kept equal to pipeline.BACKENDS (the runtime never imports it)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_text(path: Path, text: str) -> None:
    """Write only when the content changed: an unchanged kernel file keeps its mtime, so
    Numba's cache (keyed on the source file's stamp) stays valid across rebuilds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    # a private temporary name: two processes building into one directory must not
    # write the same temporary file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace), its own hash
    field left out: any edit of a value — n_params, an offset, a program's slots — shows."""
    body = {k: v for k, v in manifest.items() if k != SELF_HASH}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write(build_dir: str | os.PathLike, manifest: dict, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) and the manifest listing their hashes."""
    root = Path(build_dir)
    root.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for rel, text in sorted(files.items()):
        write_text(root / rel, text)
        hashes[rel] = sha256(root / rel)
    manifest = dict(manifest, files=hashes, format=FORMAT)
    manifest[SELF_HASH] = manifest_digest(manifest)
    write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root


def read_manifest(build_dir: str | os.PathLike) -> dict:
    root = Path(build_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise errors.BuildError(
            f"{root} is not a symcurv build directory (no {MANIFEST})",
            where=str(root),
            fix="build one with sc.compile(..., build_dir=...) or `symcurv build MODEL.py -o DIR`",
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise errors.BuildError(
            f"{MANIFEST} is corrupted: {e}", where=str(root), fix="rebuild the directory"
        ) from None
    if manifest.get("format") != FORMAT:
        raise errors.BuildError(
            f"build format {manifest.get('format')} is not {FORMAT}",
            where=str(root),
            fix="rebuild with this symcurv version",
        )
    if manifest.get(SELF_HASH) != manifest_digest(manifest):
        raise errors.BuildError(
            f"{MANIFEST} was modified after the build (its content no longer matches its "
            f"{SELF_HASH})",
            where=str(root),
            node=MANIFEST,
            fix="rebuild the directory; build files must not be edited",
        )
    return manifest


def verify(build_dir: str | os.PathLike, manifest: dict) -> None:
    root = Path(build_dir)
    for rel, digest in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise errors.BuildError(
                f"the build is partial: {rel} is missing",
                where=str(root),
                fix="rebuild the directory",
            )
        if sha256(p) != digest:
            raise errors.BuildError(
                f"{rel} was modified after the build (sha256 differs from {MANIFEST})",
                where=str(root),
                node=rel,
                fix="rebuild the directory; generated files must not be edited",
            )


def _trust_cache(path: Path, name: str) -> None:
    """Numba's on-disk cache of ``path`` is keyed on the file's stamp, but its entries
    pickle the name of the module they were compiled in: loaded under another name (a
    build from an older symcurv), they fail with ModuleNotFoundError deep inside Numba.
    A marker beside the cache records the name; on a mismatch that file's entries are
    dropped, and Numba recompiles them instead of trusting them."""
    cache = path.parent / "__pycache__"
    marker = cache / f"{path.stem}.symcurv-module"
    if marker.is_file() and marker.read_text() == name:
        return
    for entry in cache.glob(f"{path.stem}.*.nb[ic]"):
        entry.unlink(missing_ok=True)
    cache.mkdir(exist_ok=True)
    write_text(marker, name)


def _import(path: Path, name: str):
    _trust_cache(path, name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load(
    build_dir: str | os.PathLike, *, dtype: str | None = None, backend: str | None = None
) -> Program:
    """Load a build directory: no sympy, no re-derivation; hashes verified first.

    ``dtype``/``backend``, when given, must match the build (else a BuildError)."""
    root = Path(build_dir).resolve()
    manifest = read_manifest(root)
    mismatched = [
        (key, want)
        for key, want, same in (
            ("dtype", dtype, dtype is None or np.dtype(dtype) == np.dtype(manifest["dtype"])),
            ("backend", backend, backend is None or backend == manifest["backend"]),
        )
        if not same
    ]
    for key, want in mismatched:
        raise errors.BuildError(
            f"the build is for {key} {manifest[key]}, not {want}",
            where=str(root),
            fix=f"rebuild with {key}={want!r}, or load without it",
        )
    verify(root, manifest)
    if manifest["backend"] not in BACKENDS:
        raise errors.BuildError(
            f"unknown backend {manifest['backend']!r} in {MANIFEST}",
            where=str(root),
            fix=f"rebuild with one of {', '.join(BACKENDS)}",
        )
    if manifest["backend"] == "cuda":  # before importing kernels that would need a device
        from symcurv.runtime import cuda_kernels

        cuda_kernels.require(where=str(root))
    modules = {}
    for prog, spec in manifest["programs"].items():
        # backend and dtype in the name: a process may hold several builds of one model
        modname = (
            f"symcurv_build_{manifest['model']}_{manifest['ir_hash']}_"
            f"{manifest['backend']}_{manifest['dtype']}_{prog}"
        )
        modules[prog] = _import(root / spec["file"], modname)
    return Program(str(root), manifest, modules)


def graphs(build_dir: str | os.PathLike) -> dict:
    """The stored IR graphs: ``{"forward": ..., "programs": {name: ...}}`` as Graph objects."""
    from symcurv.ir.graph import Graph

    data = json.loads((Path(build_dir) / GRAPHS).read_text())
    return {
        "forward": Graph.from_json(data["forward"]),
        "programs": {k: Graph.from_json(v) for k, v in data["programs"].items()},
    }


def draw(build_dir: str | os.PathLike, program: str, path: str) -> str:
    from symcurv import viz

    gs = graphs(build_dir)
    fwd = gs["forward"]
    if program == "forward":
        return str(viz.draw(fwd, path, title=f"{fwd.name}: forward"))
    # the user-facing names of programs built as several graphs
    program = {"cp_diag": "cp_S", "becker_lecun_diag": "becker_lecun"}.get(program, program)
    if program not in gs["programs"]:
        raise errors.BuildError(
            f"no graph for program '{program}' in this build",
            where=str(build_dir),
            fix=f"choose one of forward, {', '.join(gs['programs'])}",
        )
    g = gs["programs"][program]
    return str(viz.draw(g, path, forward_ids=set(fwd.nx.nodes), title=f"{fwd.name}: {program}"))


def first_non_finite(
    prog: Program, program: str, key: str, theta, batch, v=None, noise=None
) -> tuple[str, str, bool]:
    """``(node, DSL line, found)`` of the first node whose value is not finite when the program's
    graph is re-run in the reference interpreter (with the call's θ, batch, direction and
    CP noise). When the reference stays finite (a float32 overflow the float64 reference
    does not reproduce) or cannot run, the program's output node for ``key`` is named
    instead (``found`` False): every non-finite result names a node and its DSL line."""
    try:
        g = graphs(prog.build_dir)["programs"][program]
    except Exception:  # a build without its graphs (best effort; the caller raises anyway)
        return f"'{key}' of program '{program}'", f"model '{prog.name}'", False
    try:
        from symcurv.runtime import reference

        def host(a):
            return np.asarray(a.copy_to_host() if hasattr(a, "copy_to_host") else a, np.float64)

        leaves = {n: host(a) for n, a in batch.items()}
        leaves.update({n: host(a) for n, a in (noise or {}).items()})
        leaves.update(prog.unflatten(host(theta)))
        if v is not None:
            views = prog.unflatten(host(v))
            leaves.update({f"v:{k}": a for k, a in views.items()})
        vals = reference.evaluate(g, leaves, keep_all=True)
    except Exception:  # diagnosis is best effort; fall back to the output node
        vals = {}
    for nid in g.topo():
        val = vals.get(nid)
        if val is not None and not np.isfinite(val).all():
            return (*_describe(g, nid), True)
    outs = [o for o in g.outputs if o == key or o.startswith(f"{key}:")]
    if not outs:
        return f"'{key}'", f"model '{prog.name}'", False
    return (*_describe(g, g.outputs[outs[0]]), False)


def _describe(g, nid: str) -> tuple[str, str]:
    n = g[nid]
    return f"'{n.name}' ({n.op})", n.origin or f"model '{g.name}'"
