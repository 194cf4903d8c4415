"""Build directories: write, verify and load them.

A build directory holds the generated kernel sources (``kernels/<program>.py``, and one
file per distinct compiled kernel in ``kernels/shared/``),
``manifest.json`` (versions, backend, dtype, parameter layout, programs, sha256 of every
generated file, and the sha256 of its own canonical content, so that a hand-edited
manifest is refused like an edited kernel), ``graph.json`` (the IR of the forward graph
and of every program, enough to draw them without re-deriving) and Numba's on-disk cache
(``kernels/shared/__pycache__``).
``load`` verifies every hash BEFORE importing anything and refuses a tampered, partial or
mismatched build. Numba itself revalidates its cache against each source file's stamp,
and ``_trust_cache`` against the module's name and the runtime's sources, so a stale cache
is recompiled, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
from collections.abc import Collection
from pathlib import Path

import numpy as np

from symcurv import errors
from symcurv.runtime import backends, graphs
from symcurv.runtime.program import Program

MANIFEST = "manifest.json"
GRAPHS = graphs.GRAPHS
FORMAT = 2  # 2: typed outputs, extras with a role, sum_sq_grad computes Σ_b ∇f_b² itself,
# and the manifest carries the hash of its own content
SELF_HASH = "manifest_sha256"


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
    _remove_orphans(root, files)
    return root


def _remove_orphans(root: Path, files: Collection[str]) -> None:
    """Delete the kernel files of an earlier build into ``root`` that this one no longer
    lists (a changed kernel is a new content-addressed file in kernels/shared/, so every
    rebuild after an edit of the model would leave the old one behind), with their Numba
    cache entries and cache marker."""
    for path in sorted((root / "kernels").rglob("*.py")):
        if path.relative_to(root).as_posix() in files or "__pycache__" in path.parts:
            continue
        path.unlink(missing_ok=True)
        for entry in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
            entry.unlink(missing_ok=True)


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


@functools.cache
def runtime_fingerprint() -> str:
    """sha256 (16 hex digits) of the runtime's source files (symcurv/runtime/*.py): every
    function a build's compiled code calls (vecmath, gemm and its kernels, the guards)
    lives there, and Numba compiles it INTO the build's cached code, keyed on the build's
    files alone."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _trust_cache(path: Path, name: str) -> None:
    """Numba's on-disk cache of ``path`` is keyed on the file's stamp, but its entries
    pickle the name of the module they were compiled in (loaded under another name, a
    build from an older symcurv, they fail with ModuleNotFoundError deep inside Numba),
    and hold the runtime functions they call compiled in (after an upgrade of symcurv
    they would run the old vecmath or gemm). A marker beside the cache records both the
    name and ``runtime_fingerprint()``; on a mismatch that file's entries are dropped,
    and Numba recompiles them instead of trusting them."""
    cache = path.parent / "__pycache__"
    marker = cache / f"{path.stem}.symcurv-module"
    stamp = f"{name}\n{runtime_fingerprint()}"
    if marker.is_file() and marker.read_text() == stamp:
        return
    for entry in cache.glob(f"{path.stem}.*.nb[ic]"):
        entry.unlink(missing_ok=True)
    cache.mkdir(exist_ok=True)
    write_text(marker, stamp)


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
    if manifest["backend"] not in backends.BACKENDS:
        raise errors.BuildError(
            f"unknown backend {manifest['backend']!r} in {MANIFEST}",
            where=str(root),
            fix=f"rebuild with one of {', '.join(backends.BACKENDS)}",
        )
    # before importing kernels that would need a device
    backends.get(manifest["backend"]).require(where=str(root))
    modules = {}
    for prog, spec in manifest["programs"].items():
        # backend and dtype in the name: a process may hold several builds of one model
        modname = (
            f"symcurv_build_{manifest['model']}_{manifest['ir_hash']}_"
            f"{manifest['backend']}_{manifest['dtype']}_{prog}"
        )
        modules[prog] = _import(root / spec["file"], modname)
    return Program(str(root), manifest, modules)


_LOADED: dict[tuple, Program] = {}


def from_build(build_dir: str, backend: str, dtype: str, digest: str) -> Program:
    """The Program a pickle refers to: ``sc.load(build_dir)``, checked to be the build with
    manifest hash ``digest``. Loaded once per process and thread (a Program's scratch
    buffers are not shared between threads), so a Dask worker that receives the same
    Program with every task loads and verifies it only the first time."""
    key = (build_dir, backend, dtype, digest, threading.get_ident())
    if key not in _LOADED:
        prog = load(build_dir, backend=backend, dtype=dtype)
        if prog.manifest["manifest_sha256"] != digest:
            found = prog.manifest["manifest_sha256"]
            raise errors.BuildError(
                "the build directory holds another build than the pickled Program's "
                f"(manifest hash {found[:16]}…, expected {digest[:16]}…)",
                where=build_dir,
                fix="give every process the same build directory (copy it, or rebuild once "
                "and restart the workers)",
            )
        _LOADED[key] = prog
    return _LOADED[key]
