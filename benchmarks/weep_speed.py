"""WEEP speed: elementwise cost, and time to accuracy against skglm's MCP.

    python benchmarks/weep_speed.py [--quick] [--sizes 160x400,1000x5000] [--threads N]
                                    [--max-time S] [--rounds R]

(1) Elementwise: ``WEEP(x)`` forward + backward (the fused autograd Function) against
    ``x.abs().sum()`` forward + backward on a 10^7-element float32 tensor. Target (weep.md): ratio
    <= 2.
(2) Time to accuracy on sparse recovery instances (weep.md's ``weep-recovery`` generator: unit-norm
    Gaussian columns, k = m/8 nonzeros of amplitude +-U[1, 2], noise 0.02), written in skglm's
    conventions ``(1/(2m)) ||X w - y||^2 + pen(w)`` with ``X = sqrt(m) A``:
    - skglm ``MCPRegression`` (AndersonCD; JIT warmed up by a first fit) with
      ``alpha = 0.05 ||X^T y||_inf / m``, ``gamma = 3`` -- the baseline;
    - skglm's AndersonCD with the WEEP plug-in, ``pen = (1/3) WEEP(a=100, b=(3 alpha)^2 / 2)``
      (as a -> inf this is MCP(alpha, gamma=3) with the same threshold);
    - every beyondgd solver on that same WEEP objective, in float32 and float64 (FISTA also with
      working sets, ``working_set=True``).
    Reported: time to reach 1e-6 relative suboptimality of each objective (against the best
    value any run found for that objective), and time to reach an NMSE within 1 dB of the
    converged skglm-MCP estimate, each as a ratio to skglm MCP (> 1: slower than skglm).

    skglm and beyondgd FISTA times come from separate calls at tolerances 1e-2, 1e-3, ... (the
    first call whose result meets the target; median of 3 calls each): end-to-end calls as a user
    makes them, which for one problem on the CPU runs beyondgd's compiled FISTA (numba). The other
    beyondgd methods are timed from one run with a callback that records every iterate (the
    callback's own time, which evaluates the float64 objective, is subtracted). BLAS (numpy,
    numba, skglm) and torch run on ``--threads`` threads (default 1).
    ``--quick`` runs only the first size (160, 400). ``--rounds R`` then times every end-to-end
    call (skglm's and beyondgd's FISTA) again at the tolerance where it first reached the
    suboptimality target, in R rounds in rotated order, each ratio against the same round's
    skglm MCP, and prints the median and range: the table above times each method in one block,
    so a slow spell of the machine can fall on one of them (run-to-run, the ratios moved by up
    to 20%).
(3) Where the plug-in's time goes: the MCP and WEEP plug-in fits re-run at the tolerances their
    rows were timed at, with skglm's CD epoch and gradient wrapped to count features visited
    (sweeps = columns / n) and their time per column; outer iterations and the last working set
    show how far AndersonCD grows the set.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from _timing import median_time, rotated
from beyondgd.penalties import MCP, WEEP
from beyondgd.sparse import GeometricContinuation, solve

SIZES = [(160, 400), (1000, 5000), (2000, 20000)]
SUBOPT = 1e-6
NMSE_SLACK_DB = 1.0


# ---- (1) elementwise ---------------------------------------------------------------------------
def bench_elementwise(n: int = 10**7, reps: int = 15) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen)
    pen = WEEP(a=2.0, b=0.5, c=0.1)

    def abs_sum():
        z = x.detach().requires_grad_()
        z.abs().sum().backward()

    def weep():
        z = x.detach().requires_grad_()
        pen(z).backward()

    def weep_unfused():
        z = x.detach().requires_grad_()
        pen.value(z).sum().backward()

    t_abs, t_weep = [], []
    for _ in range(3):  # interleave to share the machine's noise fairly
        t_abs.append(median_time(abs_sum, reps, warmup=2))
        t_weep.append(median_time(weep, reps, warmup=2))
    t_abs_m, t_weep_m = statistics.median(t_abs), statistics.median(t_weep)
    return {
        "abs": t_abs_m,
        "weep": t_weep_m,
        "weep_unfused": median_time(weep_unfused, max(3, reps // 3), warmup=2),
        "ratio": t_weep_m / t_abs_m,
    }


# ---- (2) time to accuracy ----------------------------------------------------------------------
def make_instance(m: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    A /= np.linalg.norm(A, axis=0)
    k = max(1, m // 8)
    x0 = np.zeros(n)
    idx = rng.choice(n, k, replace=False)
    x0[idx] = rng.choice([-1.0, 1.0], k) * rng.uniform(1.0, 2.0, k)
    y = A @ x0 + 0.02 * rng.standard_normal(m)
    X = np.sqrt(m) * A  # skglm conventions: columns of squared norm m
    return np.asfortranarray(X), y, x0 / np.sqrt(m)


class Objective:
    """(1/(2m)) ||X w - y||^2 + weight * P(w) in float64, and the NMSE of w in dB."""

    def __init__(self, X, y, w_true, penalty, weight):
        self.X = torch.from_numpy(np.ascontiguousarray(X))
        self.y = torch.from_numpy(y)
        self.w_true = torch.from_numpy(w_true)
        self.pen, self.weight = penalty, weight
        self.m = X.shape[0]

    def __call__(self, w) -> float:
        w = torch.as_tensor(w, dtype=torch.float64)
        r = self.X @ w - self.y
        return float(0.5 * (r @ r) / self.m + self.weight * self.pen._value(w).sum())

    def nmse(self, w) -> float:
        w = torch.as_tensor(w, dtype=torch.float64)
        err = float(((w - self.w_true) ** 2).sum() / (self.w_true**2).sum())
        return 10 * math.log10(max(err, 1e-30))


def sweep_trace(
    fit, obj: Objective, tols, repeats=3, stop=None
) -> list[tuple[float, float, float]]:
    """One call per tolerance, ``fit(tol) -> coef`` (median seconds of ``repeats``): (seconds,
    objective, nmse) per tolerance, up to the first that meets ``stop(objective, nmse)``."""
    out = []
    for tol in tols:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            coef = fit(tol)
            times.append(time.perf_counter() - t0)
        out.append((statistics.median(times), obj(coef), obj.nmse(coef)))
        if stop is not None and stop(*out[-1][1:]):
            break
    return out


def skglm_trace(make_estimator, X, y, obj: Objective, tols) -> list[tuple[float, float, float]]:
    """One fit per tolerance: (seconds, objective, nmse)."""
    return sweep_trace(lambda tol: make_estimator(tol).fit(X, y).coef_, obj, tols)


def fista_fit(dtype, X, y, lam, penalty, max_iter, **kw):
    """``tol -> coef``: one end-to-end ``solve`` call, as a user makes it (the compiled FISTA)."""
    A = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
    b = torch.from_numpy(y).to(dtype)

    def fit(tol):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return solve(A, b, penalty, lam, method="fista", tol=tol, max_iter=max_iter, **kw).x

    fit(1e-3)  # compile (numba caches it on disk) and warm up, as for skglm
    return fit


def paired_rounds(arms, rounds: int, repeats: int = 7) -> dict[str, list[float]]:
    """``arms``: ``(name, fit, tol)`` with the reference first. Each round times every arm's call
    at its ``tol`` (median of ``repeats`` calls), in :func:`rotated` order; returns each arm's
    ratios to the reference's time of the same round."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in arms}
    for round_ in range(rounds):
        for name, fit, tol in rotated(arms, round_):
            times[name].append(median_time(lambda fit=fit, tol=tol: fit(tol), repeats, warmup=0))
    reference = times[arms[0][0]]
    return {name: [t / r for t, r in zip(ts, reference)] for name, ts in times.items()}


def beyondgd_trace(
    method, dtype, X, y, obj: Objective, lam, penalty, max_time, max_iter, stop, **kw
):
    """One run; the callback records (solver seconds, objective, nmse) at every iterate."""
    A = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
    b = torch.from_numpy(y).to(dtype)
    trace: list[tuple[float, float, float]] = []
    clock = {"start": None, "overhead": 0.0}

    def callback(w):
        t_in = time.perf_counter()
        elapsed = t_in - clock["start"] - clock["overhead"]
        f, e = obj(w.double()), obj.nmse(w.double())
        trace.append((elapsed, f, e))
        clock["overhead"] += time.perf_counter() - t_in
        return elapsed > max_time or stop(f, e)

    clock["start"] = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(
            A, b, penalty, lam, method=method, tol=0.0, max_iter=10**7, callback=callback, **kw
        )
    return trace, res


def suboptimal(fbest: float):
    """``(objective, nmse) -> bool``: within ``SUBOPT`` relative suboptimality of ``fbest``."""
    return lambda f, e: f - fbest <= SUBOPT * abs(fbest)


def first_index(trace, ok) -> int | None:
    return next((i for i, (_, f, e) in enumerate(trace) if ok(f, e)), None)


def first_time(trace, ok) -> float:
    i = first_index(trace, ok)
    return math.nan if i is None else trace[i][0]


def anderson_cd_breakdown(X, y, penalty, tol: float, repeats: int = 3) -> dict:
    """Where one skglm AndersonCD fit spends its time: CD epochs and gradient evaluations
    (counted in columns, i.e. features visited), outer iterations, the last working set, and
    the rest (Anderson extrapolation, stopping criteria, set selection). skglm's module-level
    ``_cd_epoch`` and ``construct_grad`` are wrapped for the call and restored after."""
    import skglm.solvers.anderson_cd as acd
    from skglm.datafits import Quadratic
    from skglm.solvers import AndersonCD

    epoch, grad = acd._cd_epoch, acd.construct_grad
    n_features = X.shape[1]
    runs = []
    for _ in range(repeats + 1):  # the first call warms up (JIT), as for the timings
        stats = dict(epoch_s=0.0, epoch_cols=0, grad_s=0.0, grad_cols=0, outer=0, last_ws=0)

        def timed_epoch(X, y, w, Xw, lc, datafit, pen, ws, stats=stats):
            t0 = time.perf_counter()
            epoch(X, y, w, Xw, lc, datafit, pen, ws)
            stats["epoch_s"] += time.perf_counter() - t0
            stats["epoch_cols"] += len(ws)
            stats["last_ws"] = len(ws)

        def timed_grad(X, y, w, Xw, datafit, ws, stats=stats):
            t0 = time.perf_counter()
            out = grad(X, y, w, Xw, datafit, ws)
            stats["grad_s"] += time.perf_counter() - t0
            stats["grad_cols"] += len(ws)
            stats["outer"] += len(ws) == n_features  # the full check opens each outer iteration
            return out

        acd._cd_epoch, acd.construct_grad = timed_epoch, timed_grad
        try:
            t0 = time.perf_counter()
            AndersonCD(tol=tol, fit_intercept=False).solve(X, y, Quadratic(), penalty)
            stats["total_s"] = time.perf_counter() - t0
        finally:
            acd._cd_epoch, acd.construct_grad = epoch, grad
        runs.append(stats)
    runs = runs[1:]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    median["rest_s"] = median["total_s"] - median["epoch_s"] - median["grad_s"]
    return median


def print_breakdown(rows: list[tuple[str, float, dict]], n_features: int) -> None:
    print(
        f"{'skglm AndersonCD':22s} {'tol':>7s} {'total ms':>8s} {'outer':>5s} {'last ws':>7s} "
        f"{'CD sweeps':>9s} {'us/col':>6s} {'grad sweeps':>11s} {'us/col':>6s} {'rest ms':>7s}"
    )
    for name, tol, b in rows:
        print(
            f"{name:22s} {tol:7.0e} {b['total_s'] * 1e3:8.1f} {b['outer']:5.0f} "
            f"{b['last_ws']:7.0f} {b['epoch_cols'] / n_features:9.2f} "
            f"{b['epoch_s'] / max(b['epoch_cols'], 1) * 1e6:6.2f} "
            f"{b['grad_cols'] / n_features:11.2f} "
            f"{b['grad_s'] / max(b['grad_cols'], 1) * 1e6:6.2f} {b['rest_s'] * 1e3:7.1f}"
        )


def fmt_ratio(t: float, ref: float) -> str:
    return "   n/a" if math.isnan(t) else f"{t / ref:6.2f}"


def fmt_time(t: float) -> str:
    return "      n/a" if math.isnan(t) else f"{t:9.4f}"


def bench_size(m: int, n: int, max_time: float, max_iter: int, rounds: int = 1) -> None:
    from skglm import GeneralizedLinearEstimator, MCPRegression
    from skglm.datafits import Quadratic
    from skglm.penalties import MCPenalty
    from skglm.solvers import AndersonCD

    from beyondgd.penalties.skglm import WEEPPenalty

    X, y, w_true = make_instance(m, n)
    alpha = 0.05 * float(np.max(np.abs(X.T @ y))) / m
    gamma = 3.0
    a, b = 100.0, (gamma * alpha) ** 2 / 2
    weight = 1.0 / gamma
    obj_mcp = Objective(X, y, w_true, MCP(alpha, gamma), 1.0)
    obj_weep = Objective(X, y, w_true, WEEP(a, b), weight)
    tols = [10.0**-p for p in range(2, 13)]

    def mcp_est(tol):
        return MCPRegression(alpha=alpha, gamma=gamma, fit_intercept=False, tol=tol, max_iter=1000)

    def weep_est(tol):
        return GeneralizedLinearEstimator(
            Quadratic(), WEEPPenalty(weight, a, b), AndersonCD(tol=tol, fit_intercept=False)
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcp_est(1e-12).fit(X, y)  # JIT warm-up
        weep_est(1e-12).fit(X, y)
        mcp_trace = skglm_trace(mcp_est, X, y, obj_mcp, tols)
        weep_sk_trace = skglm_trace(weep_est, X, y, obj_weep, tols)
    f_mcp = min(f for _, f, _ in mcp_trace)
    nmse_target = mcp_trace[-1][2] + NMSE_SLACK_DB
    f_weep_best = min(f for _, f, _ in weep_sk_trace)

    # skglm rows: each entry is a separate fit at one tolerance (times are not cumulative)
    runs = [("skglm MCP (AndersonCD)", "f64", obj_mcp, mcp_trace)]
    runs.append(("skglm + WEEP plug-in", "f64", obj_weep, weep_sk_trace))

    lam = weight * m  # beyondgd's 1/2||Ax - y||^2 + lam P  ==  m * skglm objective
    fits = {  # tol -> coef, for the paired rounds
        "skglm MCP (AndersonCD) f64": lambda tol: mcp_est(tol).fit(X, y).coef_,
        "skglm + WEEP plug-in f64": lambda tol: weep_est(tol).fit(X, y).coef_,
    }
    methods = [
        ("fista", {}),
        ("fista+ws", {"working_set": True}),
        ("prox-grad", {}),
        ("gd", {}),
        ("lbfgs", {}),
        ("lbfgs+cont", {"continuation": GeometricContinuation(n_stages=5, stage_iter=100)}),
        ("adam", {"lr": 1e-3}),
    ]
    if n <= 1000:
        methods.append(("admm", {}))
    for name, kw in methods:
        method = name.split("+")[0]
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):

            def stop(f, e, fb=f_weep_best):
                return f - fb <= SUBOPT * abs(fb) and e <= nmse_target

            if method == "fista":  # end-to-end calls per tolerance, as for skglm
                sweep_tols = [t for t in tols if t >= (1e-8 if dtype == torch.float32 else 0)]
                fit = fista_fit(dtype, X, y, lam, WEEP(a, b), max_iter, **kw)
                fits[f"beyondgd {name} {tag}"] = fit
                trace = sweep_trace(fit, obj_weep, sweep_tols, stop=stop)
            else:
                trace, _ = beyondgd_trace(
                    method, dtype, X, y, obj_weep, lam, WEEP(a, b), max_time, max_iter, stop, **kw
                )
            runs.append((f"beyondgd {name}", tag, obj_weep, trace))
            f_weep_best = min(f_weep_best, min(f for _, f, _ in trace))

    print(
        f"\n== size (m, n) = ({m}, {n}), k = {max(1, m // 8)}; MCP alpha = {alpha:.4g}, gamma = 3;"
        f" WEEP a = {a:g}, b = {b:.4g}, weight 1/3; NMSE target = {nmse_target:.2f} dB"
    )
    print(
        f"{'method':28s} {'dtype':5s} {'t(subopt)':>9s} {'ratio':>6s} {'t(NMSE)':>9s} "
        f"{'ratio':>6s} {'final NMSE':>10s} {'final subopt':>12s}"
    )
    i_mcp = first_index(mcp_trace, suboptimal(f_mcp))
    i_weep = first_index(weep_sk_trace, suboptimal(f_weep_best))
    ref_sub = math.nan if i_mcp is None else mcp_trace[i_mcp][0]
    ref_nmse = first_time(mcp_trace, lambda f, e: e <= nmse_target)
    at_target = []  # (name, fit, tol) of the end-to-end calls, timed again in paired rounds
    for name, tag, obj, trace in runs:
        fbest = f_mcp if obj is obj_mcp else f_weep_best
        i_sub = first_index(trace, suboptimal(fbest))
        if f"{name} {tag}" in fits and i_sub is not None:
            at_target.append((f"{name} {tag}", fits[f"{name} {tag}"], tols[i_sub]))
        t_sub = math.nan if i_sub is None else trace[i_sub][0]
        t_nmse = first_time(trace, lambda f, e: e <= nmse_target)
        last = trace[-1]
        print(
            f"{name:28s} {tag:5s} {fmt_time(t_sub)} {fmt_ratio(t_sub, ref_sub)} "
            f"{fmt_time(t_nmse)} {fmt_ratio(t_nmse, ref_nmse)} {last[2]:10.2f} "
            f"{(last[1] - fbest) / abs(fbest):12.2e}"
        )

    if rounds > 1 and i_mcp is not None:  # MCP, the reference, is then at_target's first
        ratios = paired_rounds(at_target, rounds)
        print(
            f"\npaired rounds: each end-to-end call above again at the tolerance where it first "
            f"reached 1e-6 suboptimality, {rounds} rounds in rotated order; ratio to the same "
            "round's skglm MCP, median (range)"
        )
        for name, _, tol in at_target:
            values = ratios[name]
            print(
                f"{name:34s} tol {tol:7.0e} {statistics.median(values):6.2f}x "
                f"({min(values):.2f}-{max(values):.2f})"
            )

    # Where the plug-in's extra time goes, each at the tolerance its row above was timed at.
    if i_mcp is not None and i_weep is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = [
                (name, tols[i], anderson_cd_breakdown(X, y, pen, tols[i]))
                for name, i, pen in (
                    ("MCP", i_mcp, MCPenalty(alpha, gamma)),
                    ("WEEP plug-in", i_weep, WEEPPenalty(weight, a, b)),
                )
            ]
        print("\nwhere the plug-in's time goes (median of 3 fits; a column = one feature visited):")
        print_breakdown(rows, n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first size (160, 400)")
    parser.add_argument(
        "--sizes",
        help="comma-separated m x n sizes for the solver timings, e.g. 160x400,1000x5000 "
        "(default: " + ",".join(f"{m}x{n}" for m, n in SIZES) + ")",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--max-time", type=float, default=30.0, help="time limit per beyondgd run, seconds"
    )
    parser.add_argument(
        "--max-iter", type=int, default=20000, help="iteration limit per beyondgd run"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="R > 1: time the end-to-end calls again at their target tolerances in R rotated "
        "rounds and report the median and range of each ratio to skglm MCP",
    )
    args = parser.parse_args(argv)
    sizes = SIZES[:1] if args.quick else SIZES
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.sizes:
        try:
            sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
        except ValueError:
            parser.error(f"--sizes must look like 160x400,1000x5000, got {args.sizes!r}")
        if any(len(size) != 2 or min(size) < 1 for size in sizes):
            parser.error(f"--sizes must look like 160x400,1000x5000, got {args.sizes!r}")
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's, numba's and skglm's BLAS as well
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    el = bench_elementwise()
    print("\n== elementwise value+grad, 1e7 float32 (median seconds)")
    print(f"x.abs().sum() fwd+bwd   {el['abs']:.4f}")
    print(f"WEEP fused fwd+bwd      {el['weep']:.4f}   ratio {el['ratio']:.2f} (target <= 2)")
    unfused = el["weep_unfused"]
    print(f"WEEP unfused (autograd) {unfused:.4f}   ratio {unfused / el['abs']:.2f}")

    try:
        import skglm  # noqa: F401
    except ImportError:
        print('\nskglm is not installed (pip install "beyondgd[sparse]"): solver timings skipped')
        return
    for m, n in sizes:
        bench_size(m, n, args.max_time, args.max_iter, args.rounds)


if __name__ == "__main__":
    main()
