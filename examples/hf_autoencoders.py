"""Martens (2010) §7 on the data available here: deep autoencoders trained from a random
(sparse) initialisation by Hessian-free (RAND+HF), against SGD with momentum and Adam, each
for the same wall-clock budget; training and test error against time, plotted.

    python examples/hf_autoencoders.py curves --minutes 20      # ~1 h 10 min in all
    python examples/hf_autoencoders.py faces --minutes 10
    python examples/hf_autoencoders.py curves --quick           # a 2-minute smoke run
    python examples/hf_autoencoders.py curves --update-docs     # also write docs/img/

CURVES: 784-400-200-100-50-25-6 encoder, mirrored; logistic units, linear code layer;
sigmoid cross-entropy between the reconstruction's logits and the image (as H&S and
Martens); 20000 train / 10000 test images from ``datasets.curves_split``. FACES:
625-2000-1000-500-30 mirrored, linear output, squared error (Gaussian visible units);
scikit-image's 100 LFW faces (80 train / 20 test) standing in for the 103500 augmented
Olivetti patches, standardised as H&S's (per-pixel mean removed, unit average variance).
The error reported is the paper's Table 2 measure: the average over cases
of the SUM of squared reconstruction errors, ‖x̂ − x‖² with x̂ = σ(logits) for CURVES —
computed by a second compiled program with the same parameters (``error_model``).

Fairness: SGD-momentum and Adam are tuned by a learning-rate sweep, each candidate run for
``--tune-minutes`` (its best final training error wins) before the full run; Hessian-free
uses the paper's settings (curvature minibatch 5000 for CURVES, gradient on all cases).
Time counts optimizer steps only (``fit``'s ``time``); evaluating the errors is excluded.
Results go to ``build/hf/<dataset>.json`` and the plot to ``build/hf/hf_<dataset>.png``
(``docs/img/hf_<dataset>.png``, the figure docs/hessian_free.md shows, with
``--update-docs``).

``--quick`` is a smoke run of every stage, not a result: 1000 training and 500 test cases,
15 s per method, SGD and Adam tuned over two learning rates for 3 s each (no extension of
the grid), Hessian-free with at most 50 CG iterations on a 500-case curvature minibatch:
75 s measured on the project's busy 2-core machine with the Numba build cached in
build/hf, 2 min 8 s including the first build (~55 s of Numba compilation)."""

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

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"curves": (784, 400, 200, 100, 50, 25, 6), "faces": (625, 2000, 1000, 500, 30)}
# Martens (2010) Table 2, RAND+HF: (train, test) average sum of squared errors
PAPER = {"curves": (0.11, 0.20), "faces": (55.4, 139.0), "faces*": (60.6, 122.0)}
CURVATURE_BATCH = {"curves": 5000, "faces": 64}  # Table 1's K; FACES here has 80 cases
SGD_RATES = (0.3, 0.1, 0.03, 0.01)
ADAM_RATES = (3e-3, 1e-3, 3e-4, 1e-4)
EXTEND = 4  # at most this many rates below the grid, when its smallest wins


def mirrored(m: sc.Model, x, sizes):
    """The encoder ``sizes`` and its mirror image as decoder, Martens' sparse initialisation
    (15 non-zero incoming weights per unit), logistic hidden units, a linear code layer and
    a linear output: the output's pre-activation (each loss picks its output function)."""
    encoder = list(zip(sizes, sizes[1:]))
    layers = encoder + [(b, a) for a, b in reversed(encoder)]
    h, code = x, len(sizes) - 2
    for i, (n_in, n_out) in enumerate(layers):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.sparse(15))
        b = m.param(f"b{i}", n_out, init=sc.init.zeros())
        a = W @ h + b
        h = a if i in (code, len(layers) - 1) else sc.logistic(a)
    return h


def autoencoder(dataset: str, error: bool = False) -> sc.Model:
    """The mirrored autoencoder; ``error=True`` gives the same parameters with the loss
    ½‖x̂ − x‖², so 2 × its mean is Table 2's error."""
    sizes = ARCH[dataset]
    m = sc.Model(f"{dataset}_{'error' if error else 'train'}")
    x = m.input("x", sizes[0])
    h = mirrored(m, x, sizes)
    if dataset == "curves":
        out = sc.logistic(h) if error else h
        loss = sc.losses.squared_error(out, x) if error else sc.losses.sigmoid_cross_entropy(h, x)
    else:
        loss = sc.losses.squared_error(h, x)
    m.minimize(loss)
    return m


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H&S's FACES preprocessing, with training statistics: each pixel's mean removed, then
    one scale for all pixels so that the average variance is 1 (Gaussian visible units).
    The error of the mean image is then 625 on the training set."""
    mean = train.mean(axis=0)
    scale = float(np.sqrt(((train - mean) ** 2).mean()))
    return (train - mean) / scale, (test - mean) / scale


class Errors:
    """Table 2's error on the training and test sets, every ``every`` seconds of training
    time (and at the end); ``fit``'s callback, stopping the run when the budget is spent."""

    def __init__(self, prog, train, test, budget_s: float, every_s: float) -> None:
        self.prog, self.train, self.test = prog, train, test
        self.budget, self.every, self.next = budget_s, every_s, 0.0
        self.rows: list[dict] = []

    def error(self, theta, x) -> float:
        chunks = [x[i : i + 5000] for i in range(0, len(x), 5000)]
        sums = [2.0 * self.prog.loss(theta, {"x": c}) * len(c) for c in chunks]
        return float(np.sum(sums) / len(x))

    def record(self, it: int, theta, t: float) -> None:
        row = dict(iteration=it, time=t)
        row["train"], row["test"] = self.error(theta, self.train), self.error(theta, self.test)
        self.rows.append(row)
        print(
            f"    t = {t:7.1f} s  it {it:6d}  train {row['train']:.4f}  test {row['test']:.4f}",
            file=sys.stderr,
            flush=True,
        )

    def __call__(self, it: int, theta, row: dict) -> bool:
        t = float(row["time"])
        done = t >= self.budget
        if t >= self.next or done:
            self.record(it, theta, t)
            self.next = t + self.every
        return not done


def run(method: str, prog, err, data, budget_s, every_s, options, batch) -> dict:
    train, test = data
    theta = prog.init(0)
    if method == "hf":
        opt = sc.optim.HessianFree(prog, **options)
    elif method == "sgd":
        opt = sc.optim.SGD(prog, **options)
    else:
        opt = sc.optim.Adam(prog, **options)
    cb = Errors(err, train, test, budget_s, every_s)
    cb.record(0, theta, 0.0)
    t0 = time.perf_counter()
    try:
        res = sc.optim.fit(
            prog,
            opt,
            {"x": train},
            iterations=10**9,
            theta=theta,
            batch_size=batch,
            progress=False,
            callback=cb,
        )
        history, status = res.history, "ok"
    except sc.errors.NonFiniteError as e:
        history, status = [], f"diverged: {str(e).splitlines()[0]}"
    return dict(
        method=method,
        options=options,
        batch_size=batch,
        status=status,
        wall_s=time.perf_counter() - t0,
        errors=cb.rows,
        history=history,
    )


def tune(method, rates, prog, err, data, minutes, batch, extend=EXTEND) -> tuple[dict, list]:
    """Each learning rate for ``minutes``; the best final training error wins. While the
    smallest rate tried wins (or every rate diverged), the grid goes on downwards by
    factors of 3 (at most ``extend`` more), so the winner is an interior optimum."""
    trials: list[dict] = []

    def trial(lr: float) -> None:
        opts = dict(learning_rate=lr)
        if method == "sgd":
            opts["momentum"] = 0.9
        print(f"  tuning {method} lr = {lr:g}", file=sys.stderr, flush=True)
        r = run(method, prog, err, data, minutes * 60, 1e9, opts, batch)
        final = r["errors"][-1]["train"] if r["status"] == "ok" else float("inf")
        if r["status"] != "ok":
            print(f"    {r['status'][:100]}", file=sys.stderr, flush=True)
        trials.append(dict(learning_rate=lr, final_train=final, status=r["status"]))

    for lr in rates:
        trial(lr)
    for _ in range(extend):
        best = min(trials, key=lambda t: t["final_train"])
        smallest = min(t["learning_rate"] for t in trials)
        if math.isfinite(best["final_train"]) and best["learning_rate"] > smallest:
            break
        trial(smallest / 3)
    best = min(trials, key=lambda t: t["final_train"])
    if not math.isfinite(best["final_train"]):
        raise SystemExit(f"{method}: every learning rate tried diverged ({trials})")
    opts = dict(learning_rate=best["learning_rate"])
    if method == "sgd":
        opts["momentum"] = 0.9
    return opts, trials


def plot(results: dict, dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"hf": "C3", "sgd": "C0", "adam": "C2"}
    names = {"hf": "RAND+HF", "sgd": "SGD + momentum", "adam": "Adam"}
    for method, r in results["runs"].items():
        rows = [e for e in r["errors"] if e["time"] > 0]
        if not rows:
            continue
        t = [e["time"] for e in rows]
        ax.plot(t, [e["train"] for e in rows], color=colors[method], label=f"{names[method]} train")
        ax.plot(t, [e["test"] for e in rows], "--", color=colors[method], label="test")
    tr, te = PAPER[paper_row(dataset, results)]
    ax.axhline(tr, color="k", lw=0.8, label=f"paper RAND+HF train {tr:g}")
    ax.axhline(te, color="k", lw=0.8, ls="--", label=f"paper RAND+HF test {te:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training time (s, optimizer steps only)")
    ax.set_ylabel("average sum of squared reconstruction errors")
    row = paper_row(dataset, results).upper()
    l2 = f", l2 = {results['l2']:g}" if results.get("l2", 0) > 0 else ""
    ax.set_title(f"{row}: {'-'.join(map(str, ARCH[dataset]))} mirrored{l2}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dataset", choices=sorted(ARCH), help="which experiment of Table 2")
    ap.add_argument(
        "--minutes", type=float, default=20.0, help="training budget per method (default 20)"
    )
    ap.add_argument(
        "--tune-minutes",
        type=float,
        default=1.5,
        help="SGD/Adam tuning: minutes per learning rate (default 1.5)",
    )
    ap.add_argument(
        "--methods",
        default="hf,sgd,adam",
        help="comma-separated subset of hf, sgd, adam (default all three)",
    )
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float64"),
        help="precision of the compiled programs (default float32, as Martens' GPU runs)",
    )
    ap.add_argument(
        "--l2", type=float, default=0.0, help="weight of the l2 prior on θ (FACES*: 1e-2)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a ~2-minute smoke run of every stage (small data and budgets; see above)",
    )
    ap.add_argument("--tag", default="", help="suffix of the result and plot file names")
    ap.add_argument(
        "--rates", help="comma-separated learning rates to tune SGD/Adam over (default: a grid)"
    )
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="write the plot to docs/img/ (tracked, shown by docs/hessian_free.md) "
        "instead of build/hf/",
    )
    ap.add_argument(
        "--replot",
        nargs="+",
        metavar="JSON",
        help="no training: merge the runs of these result files (a later file's run of a "
        "method replaces an earlier one's), plot them and print the table",
    )
    return ap


def plot_path(dataset: str, tag: str, update_docs: bool) -> Path:
    """build/hf/hf_<dataset><tag>.png, or the tracked docs/img/ figure when asked."""
    folder = ROOT / "docs" / "img" if update_docs else ROOT / "build" / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"hf_{dataset}{tag}.png"


# --quick: every stage, small (see the module docstring)
QUICK = dict(train=1000, test=500, minutes=0.25, tune_minutes=0.05, rates=2, curvature=500)


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    ds = args.dataset
    tag = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    if args.replot:
        results = json.loads(Path(args.replot[0]).read_text())
        for f in args.replot[1:]:
            results["runs"].update(json.loads(Path(f).read_text())["runs"])
        img = plot_path(ds, tag, args.update_docs)
        plot(results, ds, img)
        summary(results, ds)
        print(f"wrote {img}")
        return 0
    if ds == "curves":
        train, test = datasets.curves_split(seed=0)
    else:
        train, test = standardise(*datasets.faces(seed=0))
    hf_options, extend = {}, EXTEND
    if args.quick:
        train, test = train[: QUICK["train"]], test[: QUICK["test"]]
        args.minutes, args.tune_minutes = QUICK["minutes"], QUICK["tune_minutes"]
        hf_options, extend = dict(max_cg_iterations=50), 0
    train, test = train.astype(args.dtype), test.astype(args.dtype)
    build = ROOT / "build" / "hf"
    print(f"{ds}: {train.shape[0]} train, {test.shape[0]} test; compiling", file=sys.stderr)
    prog = sc.compile(
        autoencoder(ds),
        programs=["loss", "grad", "gnvp", "sum_sq_grad"],
        dtype=args.dtype,
        build_dir=build / f"{ds}_{args.dtype}",
    )
    err = sc.compile(
        autoencoder(ds, error=True),
        programs=["loss"],
        dtype=args.dtype,
        build_dir=build / f"{ds}_error_{args.dtype}",
    )
    assert err.n_params == prog.n_params
    budget, every = args.minutes * 60, max(5.0, args.minutes * 60 / 40)
    results = dict(
        dataset=ds,
        n_train=int(train.shape[0]),
        n_test=int(test.shape[0]),
        dtype=args.dtype,
        minutes=args.minutes,
        l2=args.l2,
        runs={},
        tuning={},
    )
    data = (train, test)
    for method in args.methods.split(","):
        print(f"{method}:", file=sys.stderr, flush=True)
        if method == "hf":
            opts = dict(l2=args.l2, **hf_options)
            batch = min(CURVATURE_BATCH[ds], train.shape[0])
            if args.quick:
                batch = min(batch, QUICK["curvature"])
        else:
            rates = SGD_RATES if method == "sgd" else ADAM_RATES
            if args.rates:
                rates = tuple(float(r) for r in args.rates.split(","))
            elif args.quick:
                rates = rates[1 : 1 + QUICK["rates"]]
            opts, trials = tune(
                method, rates, prog, err, data, args.tune_minutes, 100, extend=extend
            )
            results["tuning"][method] = trials
            opts["l2"] = args.l2
            batch = 100
        results["runs"][method] = run(method, prog, err, data, budget, every, opts, batch)
    out = build / f"{ds}{tag}.json"
    out.write_text(json.dumps(results, indent=1, default=float))
    img = plot_path(ds, tag, args.update_docs)
    plot(results, ds, img)
    summary(results, ds)
    print(f"wrote {out} and {img}")
    return 0


def at_time(rows: list[dict], t: float) -> dict:
    """The last error measurement taken at training time ≤ t (+1%: runs given the same
    budget stop a step past it)."""
    return [r for r in rows if r["time"] <= 1.01 * t][-1]


def paper_row(dataset: str, results: dict) -> str:
    """Table 2's row for these runs: FACES* when FACES was trained with an l2 prior."""
    return "faces*" if dataset == "faces" and results.get("l2", 0) > 0 else dataset


def summary(results: dict, ds: str) -> None:
    """Each method's final errors, and every method's errors at the shortest run's end
    (the equal-time comparison when the runs had different budgets)."""
    runs = results["runs"]
    equal = min(r["errors"][-1]["time"] for r in runs.values())
    print(f"\n{ds.upper()} ({results['dtype']}, l2 = {results.get('l2', 0)}):")
    head = f"{'method':<6} {'minutes':>7} {'train':>9} {'test':>9} | at {equal / 60:5.1f} min: "
    print(head + f"{'train':>9} {'test':>9}  options, status")
    for method, r in runs.items():
        last, eq = r["errors"][-1], at_time(r["errors"], equal)
        print(
            f"{method:<6} {last['time'] / 60:7.1f} {last['train']:9.4f} {last['test']:9.4f} | "
            f"{'':>16}{eq['train']:9.4f} {eq['test']:9.4f}  {r['options']} {r['status']}"
        )
    tr, te = PAPER[paper_row(ds, results)]
    print(f"{'paper':<6} {'':>7} {tr:9.4f} {te:9.4f}   RAND+HF, Table 2 ({paper_row(ds, results)})")


if __name__ == "__main__":
    raise SystemExit(main())
