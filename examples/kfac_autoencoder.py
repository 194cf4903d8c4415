"""George (2017) Fig. 6.2 on CURVES: K-FAC, ACP, ACP with a fixed α, centered SGD, SGD with
momentum, Adam and Hessian-free on the autoencoder 784-1000-500-250-30 mirrored with squared
error, each tuned by the same sweep and then trained for the same CPU-time budget; training
and test error against time, plotted, and a table of errors at equal times.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python examples/kfac_autoencoder.py
                                              # 3 CPU min per method, 45 s per sweep value
    python examples/kfac_autoencoder.py --quick                     # a smoke run (seconds)
    python examples/kfac_autoencoder.py --replot A.json B.json --update-docs   # docs/img/

Network: logistic hidden units, linear 30-unit code and linear output (003 §4.2), loss
½‖f(x) − x‖² averaged over the minibatch; the error reported is 003's and Martens' Table 2
measure, the average over cases of the SUM of squared reconstruction errors ‖f(x) − x‖²
(2 × the loss). Data: CURVES images (``datasets.curves``, 20000 train / 10000 test from
independent streams, as ``curves_split``) standing in for MNIST; the errors are measured on
fixed 2000-case subsets of each set.

Methods, as in 003 §6.6.2: minibatch 200 for every update and for the statistics;
statistics and inverses every 100 updates (``--every``; K-FAC ``factors_every =
inverse_every`` with its adaptive α, μ and λ; ACP ``inverse_every``); centered SGD (003
Algorithm 2) and SGD with momentum 0.9; Adam; Hessian-free (adaptive damping, CG
backtracking) with the swept gradient and curvature minibatches.

Fairness: every method gets the same sweep — ``--grid`` values of ONE hyperparameter
(``SWEEPS``: K-FAC the initial λ, ACP its λ, ACP with fixed α its α, the first-order methods
the learning rate, HF its batch sizes), each run for ``--tune-minutes`` from the same
initial θ; the best final training error wins and is then run for ``--minutes``. Time is
the process's CPU time in optimizer steps (``Errors``; evaluation excluded), so that on a
shared machine the others' load does not count. Results go to
``build/kfac_ae/kfac_ae<tag>.json`` and the plot to ``build/kfac_ae/kfac_autoencoder<tag>.png``
(``docs/img/`` with ``--update-docs``). Finished sweep trials and runs are cached under
``build/kfac_ae/<net>/cache/`` (``Cache``; ``--fresh`` ignores it), a run in progress keeps
its curve there (``partial_*.json``, which ``--replot`` takes), and the grid is extended
outward while its best value is at an edge (``--extend``).

``--quick`` is a smoke run of every stage, not a result: a 100-32-16-8 mirrored network on
10×10 CURVES (300 train / 200 test), statistics every 10 updates, 2 sweep values per method
for 0.5 s each, 1.5 s per method."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import symcurv as sc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets  # noqa: E402
import hf_autoencoders  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = (784, 1000, 500, 250, 30)
METHODS = ("kfac", "acp", "acp_fixed", "centered", "sgd", "adam", "hf")
NAMES = {
    "kfac": "K-FAC",
    "acp": "ACP",
    "acp_fixed": "ACP, fixed α",
    "centered": "centered SGD",
    "sgd": "SGD + momentum",
    "adam": "Adam",
    "hf": "Hessian-free",
}
# method -> (the hyperparameter swept, its grid from best-guess outwards); hf's values are
# (gradient batch, curvature batch), None = the whole training set
SWEEPS = {
    "kfac": ("damping", (1e-1, 1.0, 1e-2)),
    "acp": ("damping", (1.0, 10.0, 0.1)),
    "acp_fixed": ("alpha", (1.0, 3.0, 0.3)),
    "centered": ("learning_rate", (0.01, 0.03, 0.003)),
    "sgd": ("learning_rate", (0.01, 0.03, 0.003)),
    "adam": ("learning_rate", (1e-3, 3e-3, 3e-4)),
    "hf": ("batches", ((2000, 1000), (5000, 2000), (None, 5000))),
}
BATCH = 200  # 003 §6.6.2: every update and the statistics
EVERY = 100  # statistics and inverses every 100 updates
QUICK = dict(sizes=(100, 32, 16, 8), train=300, test=200, every=10, grid=2)
QUICK.update(tune_s=0.5, run_s=1.5)


def model(sizes=SIZES) -> sc.Model:
    """The mirrored autoencoder with squared error (003 §4.2): logistic hidden units,
    linear code and output."""
    m = sc.Model("kfac_autoencoder")
    x = m.input("x", sizes[0])
    h = hf_autoencoders.mirrored(m, x, sizes)  # the network of the HF example
    m.minimize(sc.losses.squared_error(h, x))
    return m


def optimizer(method: str, prog, value, every: int, n_train: int):
    """The optimizer of ``method`` with its swept hyperparameter at ``value``; returns
    (optimizer, fit's batch_size)."""
    o = sc.optim
    if method == "kfac":
        opt = o.KFAC(prog, damping=value, factors_every=every, inverse_every=every)
    elif method == "acp":
        opt = o.ACP(prog, damping=value, learning_rate=1.0, inverse_every=every)
    elif method == "acp_fixed":
        opt = o.ACP(prog, alpha=value, damping=1.0, learning_rate=1.0, inverse_every=every)
    elif method == "centered":
        opt = o.CenteredSGD(prog, value, momentum=0.9)
    elif method == "sgd":
        opt = o.SGD(prog, learning_rate=value, momentum=0.9)
    elif method == "adam":
        opt = o.Adam(prog, learning_rate=value)
    else:
        gradient, curvature = value
        if gradient is not None and gradient >= n_train:
            gradient = None
        opt = o.HessianFree(prog, gradient_batch_size=gradient)
        return opt, min(curvature, n_train)
    return opt, BATCH


class Errors:
    """The error on the training and test subsets every ``every_s`` seconds of training
    time (and at the end); ``fit``'s callback, stopping the run when the budget is spent.

    Training time is this process's CPU time (``time.process_time``) less the time spent
    evaluating: on a shared machine a wall clock charges each method for the others' load,
    CPU time only for its own work (run with one BLAS and one Numba thread, it is the
    single-core time)."""

    def __init__(self, prog, train, test, budget_s: float, every_s: float, partial=None) -> None:
        self.prog, self.train, self.test, self.partial = prog, train, test, partial
        self.budget, self.every, self.next = budget_s, every_s, 0.0
        self.rows: list[dict] = []
        self.start, self.excluded = time.process_time(), 0.0

    def error(self, theta, x) -> float:
        """Mean over cases of ‖f(x) − x‖² = 2 × the mean loss."""
        chunks = [x[i : i + 2500] for i in range(0, len(x), 2500)]
        return float(sum(2.0 * self.prog.loss(theta, {"x": c}) * len(c) for c in chunks) / len(x))

    def elapsed(self) -> float:
        return time.process_time() - self.start - self.excluded

    def record(self, it: int, theta, t: float) -> None:
        t0 = time.process_time()
        row = dict(iteration=it, time=t)
        row["train"], row["test"] = self.error(theta, self.train), self.error(theta, self.test)
        self.rows.append(row)
        if self.partial:  # the curve so far, kept if the run is cut (``--replot`` reads it)
            path, head = self.partial
            run = dict(head, status="partial", steps=it, errors=self.rows)
            path.write_text(json.dumps(run, indent=1, default=float))
        print(
            f"    t = {t:7.1f} s  it {it:6d}  train {row['train']:.4f}  test {row['test']:.4f}",
            file=sys.stderr,
            flush=True,
        )
        self.excluded += time.process_time() - t0

    def __call__(self, it: int, theta, row: dict) -> bool:
        t = self.elapsed()
        done = t >= self.budget
        if t >= self.next or done:
            self.record(it, theta, t)
            self.next = t + self.every
        return not done


def run(method, value, prog, data, budget_s, every_s, every, partial=None) -> dict:
    """One training run of ``method`` at ``value`` for ``budget_s`` seconds of steps; with
    ``partial`` (a path) the curve so far is rewritten there at every measurement."""
    train, evaluation = data
    opt, batch = optimizer(method, prog, value, every, len(train))
    theta = prog.init(0)
    head = dict(method=method, value=value, batch_size=batch)
    cb = Errors(prog, *evaluation, budget_s, every_s, (partial, head) if partial else None)
    cb.record(0, theta, 0.0)
    t0 = time.perf_counter()
    try:
        res = sc.optim.fit(
            prog, opt, {"x": train}, 10**9, theta, batch_size=batch, progress=False, callback=cb
        )
        steps, status = len(res.history), "ok"
    except (sc.errors.NonFiniteError, sc.optim.OptimizerError) as e:
        steps, status = 0, f"failed: {str(e).splitlines()[0]}"
    return dict(
        method=method,
        value=value,
        batch_size=batch,
        status=status,
        steps=steps,
        wall_s=time.perf_counter() - t0,
        errors=cb.rows,
    )


def final_train(r: dict) -> float:
    """A run's last training error; +inf when it failed or ended non-finite."""
    e = r["errors"][-1]["train"] if r["status"] == "ok" and r["errors"] else math.inf
    return e if math.isfinite(e) else math.inf


def outward(value: float, up: bool) -> float:
    """The next value beyond ``value`` on the 1-3-10 ladder (…, 0.1, 0.3, 1, 3, 10, …), the
    spacing of ``SWEEPS``' grids: up (0.03 → 0.1) or down (0.003 → 0.001)."""
    k = math.floor(math.log10(value))
    ladder = [float(f"{m}e{e}") for e in range(k - 2, k + 3) for m in (1, 3)]
    return (
        min(c for c in ladder if c > 1.5 * value)
        if up
        else max(c for c in ladder if c < value / 1.5)
    )


class Cache:
    """Finished sweep trials and runs, one JSON file each under ``folder``, keyed by
    everything that determines them (method, value, CPU budget, statistics period), so that
    a cut or crashed run resumes where it stopped and a longer run reuses the sweep of a
    shorter one with the same trial length. ``reuse`` seeds it with the sweeps of earlier
    result files (``--reuse``) whose network, trial length and period match."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.folder, self.enabled = folder, enabled
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, method: str, value, seconds: float, every: int) -> Path:
        v = json.dumps(value).replace(" ", "").replace(",", "_").strip("[]")
        return self.folder / f"{kind}_{method}_{v}_{seconds:g}s_every{every}.json"

    def get(self, *key):
        p = self.path(*key)
        return json.loads(p.read_text()) if self.enabled and p.exists() else None

    def put(self, entry: dict, *key) -> None:
        self.path(*key).write_text(json.dumps(entry, indent=1, default=float))

    def reuse(self, files, sizes, tune_s: float, every: int) -> int:
        """Copy the matching sweep trials of earlier result files in; returns how many."""
        n = 0
        for f in files:
            r = json.loads(Path(f).read_text())
            same = r["sizes"] == list(sizes) and r["every"] == every
            if not (same and abs(r["tune_minutes"] * 60 - tune_s) < 1e-9):
                print(f"  --reuse {f}: another network, period or trial length; skipped")
                continue
            for method, trials in r["tuning"].items():
                for t in trials:
                    key = ("trial", method, t["value"], tune_s, every)
                    if not self.path(*key).exists():
                        self.put(dict(t, reused_from=str(f)), *key)
                        n += 1
        return n


def trial(method, value, prog, data, seconds, every, cache: Cache | None) -> dict:
    """One sweep trial (cached): the final training error after ``seconds``."""
    key = ("trial", method, value, seconds, every)
    hit = cache.get(*key) if cache else None
    if hit is not None:
        print(f"  {method} {SWEEPS[method][0]} = {value}: cached, {hit['final_train']:.4g}")
        return hit
    print(f"  tuning {method} {SWEEPS[method][0]} = {value}", file=sys.stderr, flush=True)
    r = run(method, value, prog, data, seconds, 1e9, every)
    t = dict(value=value, final_train=final_train(r), steps=r["steps"], status=r["status"])
    if cache:
        cache.put(t, *key)
    return t


def tune(method, grid, prog, data, seconds, every, cache=None, extend=2) -> tuple:
    """Every value of ``grid`` for ``seconds``; the best final training error wins. While
    the best is the largest or smallest value tried (its optimum may lie beyond), the grid is
    extended outward on that side (``outward``), up to ``extend`` extra values; a best
    still at the edge then is flagged ``edge`` in the result."""
    trials = [trial(method, v, prog, data, seconds, every, cache) for v in grid]
    numeric = all(isinstance(v, (int, float)) for v in grid)
    for _ in range(extend if numeric else 0):
        best = min(trials, key=lambda t: t["final_train"])
        values = [t["value"] for t in trials]
        if not math.isfinite(best["final_train"]) or min(values) < best["value"] < max(values):
            break
        up = best["value"] == max(values)
        trials.append(trial(method, outward(best["value"], up), prog, data, seconds, every, cache))
        trials[-1]["extended"] = True
    best = min(trials, key=lambda t: t["final_train"])
    if not math.isfinite(best["final_train"]):
        raise SystemExit(f"{method}: every value tried failed ({trials})")
    values = [t["value"] for t in trials]
    best["edge"] = numeric and best["value"] in (min(values), max(values))
    return best["value"], trials


def at_time(rows: list[dict], t: float) -> dict:
    """The last error measurement taken at training time ≤ t (+1%: runs given the same
    budget stop a step past it)."""
    return [r for r in rows if r["time"] <= 1.01 * t][-1]


def table(results: dict, times=None) -> str:
    """Markdown: per method the swept value, the steps, and train / test error at ``times``
    (CPU s; default a quarter, a half and all of the budget)."""
    budget = results["minutes"] * 60
    times = times or (budget / 4, budget / 2, budget)
    head = "| method | swept | steps | " + " | ".join(
        f"train / test at {t:.3g} CPU s" for t in times
    )
    lines = [head + " |", "|" + "---|" * (3 + len(times))]
    for method, r in results["runs"].items():
        cells = []
        for t in times:
            e = at_time(r["errors"], t)
            cut = r["status"] == "partial" and r["errors"][-1]["time"] < 0.99 * t
            cells.append("—" if cut else f"{e['train']:.3f} / {e['test']:.3f}")
        swept = f"{SWEEPS[method][0]} = {r['value']}"
        steps = str(r["steps"])
        if r["status"] == "partial":
            steps += f" (cut at {r['errors'][-1]['time']:.0f} s)"
        lines.append(f"| {NAMES[method]} | {swept} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for k, (method, r) in enumerate(results["runs"].items()):
        rows = [e for e in r["errors"] if e["time"] > 0]
        t = [e["time"] for e in rows]
        for ax, which in zip(axes, ("train", "test")):
            ax.plot(t, [e[which] for e in rows], color=f"C{k}", label=NAMES[method])
    sizes = "-".join(map(str, results["sizes"]))
    for ax, which in zip(axes, ("training", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training CPU time (s, one thread, optimizer steps only)")
        ax.set_title(f"{which} error, CURVES, {sizes} mirrored")
    axes[0].set_ylabel("mean ‖f(x) − x‖²")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--minutes",
        type=float,
        default=3.0,
        help="training budget per method, CPU minutes (default 3)",
    )
    ap.add_argument(
        "--tune-minutes",
        type=float,
        default=0.75,
        help="CPU minutes per sweep value (default 0.75)",
    )
    ap.add_argument(
        "--grid", type=int, default=3, help="sweep values per method, from SWEEPS (default 3)"
    )
    ap.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)} (default all)",
    )
    ap.add_argument(
        "--every",
        type=int,
        default=EVERY,
        help=f"statistics and inverses every this many updates (default {EVERY}, 003's)",
    )
    ap.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="encoder layer sizes, the first one the image's pixels (default 784,1000,500,250,30)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run of every stage in seconds (see above)"
    )
    ap.add_argument(
        "--extend",
        type=int,
        default=2,
        help="extra sweep values beyond the grid's edge while the best is there (default 2)",
    )
    ap.add_argument(
        "--reuse",
        nargs="+",
        metavar="JSON",
        help="earlier result files whose sweep trials (same network, period, trial length) "
        "count as done",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="ignore the cache of finished trials and runs (build/kfac_ae/<net>/cache/)",
    )
    ap.add_argument("--tag", default="", help="suffix of the result and plot file names")
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="write the plot to docs/img/kfac_autoencoder.png instead of build/kfac_ae/",
    )
    ap.add_argument(
        "--table-times",
        metavar="S,S,...",
        help="with --replot: the table's CPU times (default a quarter, a half, all the budget)",
    )
    ap.add_argument(
        "--replot",
        nargs="+",
        metavar="JSON",
        help="no training: merge these result files' runs (later ones win), plot and tabulate",
    )
    return ap


def plot_path(tag: str, update_docs: bool) -> Path:
    folder = ROOT / "docs" / "img" if update_docs else ROOT / "build" / "kfac_ae"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"kfac_autoencoder{tag}.png"


def data(n_pixels: int, n_train: int = 20000, n_test: int = 10000, n_eval: int = 2000):
    """(train, (train subset, test subset)) as float64 arrays: CURVES images with
    ``n_pixels`` pixels, from independent streams as ``datasets.curves_split``'s."""
    size = math.isqrt(n_pixels)
    if size * size != n_pixels:
        raise SystemExit(f"the first layer ({n_pixels}) must be a square image's pixels")
    train_seq, test_seq = np.random.SeedSequence(0).spawn(2)
    train = datasets.curves(n_train, seed=train_seq, size=size)
    test = datasets.curves(n_test, seed=test_seq, size=size)
    n = min(n_eval, len(train), len(test))
    return train.astype(np.float64), (train[:n], test[:n])


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    tag = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    if args.replot:
        results = json.loads(Path(args.replot[0]).read_text())
        for f in args.replot[1:]:  # result files, or single runs (a cut run's partial file)
            r = json.loads(Path(f).read_text())
            results["runs"].update(r["runs"] if "runs" in r else {r["method"]: r})
        times = [float(t) for t in args.table_times.split(",")] if args.table_times else None
        return report(results, plot_path(tag, args.update_docs), times)
    sizes, every, grid = tuple(int(n) for n in args.sizes.split(",")), args.every, args.grid
    if args.quick:
        sizes, every, grid = QUICK["sizes"], QUICK["every"], QUICK["grid"]
        args.minutes, args.tune_minutes = QUICK["run_s"] / 60, QUICK["tune_s"] / 60
        train, evaluation = data(sizes[0], QUICK["train"], QUICK["test"])
    else:
        train, evaluation = data(sizes[0])
    build = ROOT / "build" / "kfac_ae"
    name = "-".join(map(str, sizes))
    print(f"{len(train)} train; compiling {sizes}", file=sys.stderr, flush=True)
    prog = sc.compile(
        model(sizes),
        programs=["loss", "grad", "gnvp", "kfac", "sum_sq_grad"],
        build_dir=build / name,
    )
    results = dict(
        sizes=list(sizes),
        n_train=len(train),
        n_eval=len(evaluation[0]),
        minutes=args.minutes,
        tune_minutes=args.tune_minutes,
        every=every,
        runs={},
        tuning={},
    )
    budget, tune_s = args.minutes * 60, args.tune_minutes * 60
    cache = Cache(build / name / f"cache{'_quick' if args.quick else ''}", not args.fresh)
    if args.reuse:
        print(f"reused {cache.reuse(args.reuse, sizes, tune_s, every)} sweep trials")
    for method in args.methods.split(","):
        print(f"{method}:", file=sys.stderr, flush=True)
        values = SWEEPS[method][1][:grid]
        d = (train, evaluation)
        extend = args.extend if grid > 1 else 0
        value, results["tuning"][method] = tune(
            method, values, prog, d, tune_s, every, cache, extend
        )
        key = ("run", method, value, budget, every)
        partial = cache.path("partial", *key[1:])
        results["runs"][method] = cache.get(*key) or run(
            method, value, prog, d, budget, budget / 15, every, partial
        )
        cache.put(results["runs"][method], *key)
        partial.unlink(missing_ok=True)
        out = build / f"kfac_ae{tag}.json"  # after each method: a cut run keeps the rest
        out.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out}")
    return report(results, plot_path(tag, args.update_docs))


def report(results: dict, img: Path, times=None) -> int:
    plot(results, img)
    print(table(results, times))
    print(f"wrote {img}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
