"""Working sets + Anderson in ``beyondgd.sparse.solve`` against skglm (issue 15, first part).

    python benchmarks/sparse_working_set.py [--only single|batched] [--repeats N] [--quick]
                                            [--threads N]

Instances: ``weep_speed.make_instance`` (unit-norm Gaussian columns scaled to skglm's conventions,
``k = m/8`` nonzeros, noise 0.02). Objective: MCP (``alpha = 0.05 ||X^T y||_inf / m``,
``gamma = 3``), ``(1/(2m)) ||X w - y||^2 + MCP(w)`` for skglm, the same times ``m`` for beyondgd.

- ``single``: one problem at (160, 400) and (1000, 5000), float32 and float64: time to 1e-6
  relative suboptimality (against the best objective any run found) of skglm ``MCPRegression``
  (AndersonCD, JIT warmed up) and beyondgd FISTA / prox-grad with and without working sets and
  Anderson (K = 5), printed as ratios to skglm measured in the same run (> 1: slower); then the
  issue's own measure, beyondgd FISTA on WEEP (``a = 100``, ``b = (3 alpha)^2 / 2``, weight 1/3:
  MCP's smooth limit) to 1e-6 suboptimality of the WEEP objective, against the same skglm time,
  with and without working sets (WEEP's prox leaves no exact zeros: outside the set the
  coordinates take prox-gradient steps inside WEEP's quadratic zone, see ``solve``).
- ``batched``: B = 64 problems of (160, 400), each with its own X, solved in one batched call,
  against a loop of 64 skglm fits; MCP, then WEEP on its own objective.

Each solver is run at tolerances 1e-3, 1e-4, ... and timed at the first tolerance whose result
meets the suboptimality target (for every problem of a batch); the time is the median of
``--repeats`` runs. Next to seconds, beyondgd's products with ``X`` (``result.info["products"]``,
a product with k of the n columns counting k/n) are printed: a load-independent cost. The machine
these numbers come from may be loaded: read the seconds as rough. Without Anderson, beyondgd's
FISTA runs compiled on the CPU (numba; a batch problem by problem), with Anderson the torch loop;
torch and every BLAS (numpy, numba, skglm) use ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from beyondgd.penalties import MCP, WEEP
from beyondgd.sparse import solve
from weep_speed import make_instance

SUBOPT = 1e-6
TOLS = [10.0**-p for p in range(3, 13)]
VARIANTS = [
    ("fista", {}),
    ("fista + anderson", {"anderson": 5}),
    ("fista + ws", {"working_set": True}),
    ("fista + ws + anderson", {"working_set": True, "anderson": 5}),
    ("prox-grad + ws + anderson", {"method": "prox-grad", "working_set": True, "anderson": 5}),
]
WEEP_VARIANTS = [
    ("fista WEEP", {}),
    ("fista + anderson WEEP", {"anderson": 5}),
    ("fista + ws WEEP", {"working_set": True}),
    ("fista + ws + anderson WEEP", {"working_set": True, "anderson": 5}),
]


def objective(X, y, w, pen, weight=1.0) -> np.ndarray:
    """skglm's objective ``(1/(2m)) ||X w - y||^2 + weight P(w)`` in float64, per problem."""
    X, y, w = (torch.as_tensor(a, dtype=torch.float64) for a in (X, y, w))
    r = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    m = X.shape[-2]
    return (0.5 * (r * r).sum(-1) / m + weight * pen._value(w).sum(-1)).numpy()


def timed(fn, repeats: int):
    out = None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def skglm_fit_all(X, y, alpha, tol):
    from skglm import MCPRegression

    return np.stack(
        [
            MCPRegression(alpha=a, gamma=3.0, fit_intercept=False, tol=tol, max_iter=1000)
            .fit(Xi, yi)
            .coef_
            for Xi, yi, a in zip(X, y, alpha)
        ]
    )


def beyondgd_solver(X, y, pen, weight, dtype, kw):
    """A function ``tol -> (coefs (B, n) float64, products)`` for one (batched) solve."""
    kw = dict(kw)
    method = kw.pop("method", "fista")
    A = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
    b = torch.from_numpy(y).to(dtype)
    m = X.shape[-2]
    if A.shape[0] == 1:
        A, b = A[0], b[0]

    def run(tol):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = solve(A, b, pen, weight * m, method=method, tol=tol, max_iter=20_000, **kw)
        return res.x.double().numpy().reshape(len(X), -1), res.info["products"]

    return run


def sweep(fit, obj, f_best, tols, repeats):
    """Time of the first tolerance whose result meets the target: (tol, seconds, extra)."""
    for tol in tols:
        t, out = timed(lambda tol=tol: fit(tol), repeats)
        w, extra = out if isinstance(out, tuple) else (out, None)
        if np.all(obj(w) - f_best <= SUBOPT * np.abs(f_best)):
            return tol, t, extra
    return None


def rows(X, y, pen, weight, variants, dtypes, t_ref, repeats) -> None:
    """beyondgd rows on ``pen``'s objective, as ratios to the skglm time ``t_ref``."""

    def obj(w):
        return objective(X, y, w, pen, weight)

    # reference: a tight float64 solve (and the skglm fit for MCP, see compare)
    f_best = obj(beyondgd_solver(X, y, pen, weight, torch.float64, {})(1e-11)[0])
    rows.f_best = np.minimum(f_best, getattr(rows, "f_skglm", f_best))
    for tag, dtype in dtypes:
        tols = [t for t in TOLS if t >= (1e-8 if dtype == torch.float32 else 0)]
        for name, kw in variants:
            fit = beyondgd_solver(X, y, pen, weight, dtype, kw)
            ok = sweep(fit, obj, rows.f_best, tols, repeats)
            label = f"beyondgd {name}"
            if ok is None:
                print(f"{label:34s} {tag:5s}  did not reach {SUBOPT:g} suboptimality")
                continue
            tol, t, products = ok
            print(f"{label:34s} {tag:5s} {tol:7.0e} {t:9.4f} {t / t_ref:7.2f} {products:9.1f}")


def compare(title, X, y, alpha, repeats, dtypes, weep=False) -> None:
    if not np.all(alpha == alpha[0]):
        raise ValueError("one alpha per batch (the penalty is shared)")
    a0 = float(alpha[0])
    mcp = MCP(a0, 3.0)
    skglm_fit_all(X[:1], y[:1], alpha[:1], 1e-12)  # JIT warm-up
    print(f"\n== {title}")
    print(f"{'solver':34s} {'dtype':5s} {'tol':>7s} {'seconds':>9s} {'ratio':>7s} {'products':>9s}")
    # reference objective: the best of a tight skglm fit and a tight float64 beyondgd solve
    rows.f_skglm = objective(X, y, skglm_fit_all(X, y, alpha, 1e-12), mcp)
    f_best = np.minimum(
        rows.f_skglm,
        objective(X, y, beyondgd_solver(X, y, mcp, 1.0, torch.float64, {})(1e-11)[0], mcp),
    )
    ref = sweep(
        lambda tol: skglm_fit_all(X, y, alpha, tol),
        lambda w: objective(X, y, w, mcp),
        f_best,
        TOLS,
        repeats,
    )
    t_ref = ref[1]
    print(f"{'skglm MCPRegression (loop)':34s} {'f64':5s} {ref[0]:7.0e} {t_ref:9.4f} {1:7.2f}")
    rows(X, y, mcp, 1.0, VARIANTS, dtypes, t_ref, repeats)
    if weep:
        # the measure: WEEP (a = 100, b = (3 alpha)^2 / 2, weight 1/3; MCP's limit) on
        # its own objective, to 1e-6 suboptimality, against the same skglm MCP time
        del rows.f_skglm
        print("-- WEEP(a=100) on its own objective, ratio to skglm MCP above:")
        weep_pen = WEEP(100.0, (3.0 * a0) ** 2 / 2)
        rows(X, y, weep_pen, 1.0 / 3.0, WEEP_VARIANTS, dtypes, t_ref, repeats)


def instance_batch(m, n, seeds):
    X, y = [], []
    for s in seeds:
        Xi, yi, _ = make_instance(m, n, seed=s)
        X.append(Xi)
        y.append(yi)
    X, y = np.stack(X), np.stack(y)
    alpha = 0.05 * np.abs(np.einsum("bmn,bm->bn", X, y)).max(-1) / m
    return X, y, alpha


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["single", "batched"], help="run one section")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    parser.add_argument("--quick", action="store_true", help="single: only (160, 400)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS (numpy, numba, skglm) threads"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); timings are rough")
    try:
        import skglm  # noqa: F401
    except ImportError:
        print('skglm is not installed (pip install "beyondgd[sparse]"): nothing to compare')
        return
    dtypes = [("f32", torch.float32), ("f64", torch.float64)]
    if args.only in (None, "single"):
        sizes = [(160, 400)] if args.quick else [(160, 400), (1000, 5000)]
        for m, n in sizes:
            X, y, alpha = instance_batch(m, n, [0])
            compare(
                f"single problem (m, n) = ({m}, {n}), MCP gamma = 3",
                X,
                y,
                alpha,
                args.repeats,
                dtypes,
                weep=True,
            )
    if args.only in (None, "batched"):
        B, m, n = 64, 160, 400
        X, y, alpha = instance_batch(m, n, range(B))
        # one alpha for the batch (the penalty is shared): the largest of the per-problem ones
        alpha = np.full(B, alpha.max())
        compare(
            f"batched: B = {B} problems of ({m}, {n}) at once vs a loop of skglm fits",
            X,
            y,
            alpha,
            args.repeats,
            dtypes,
            weep=True,
        )


if __name__ == "__main__":
    main()
