"""FUSE against its peers: per-step cost of each phase, and final loss on the test functions.

    python benchmarks/fuse_overhead.py [--quick]

Targets (fuse.md): the Adam phase within 5% of ``torch.optim.Adam`` per step, the L-BFGS phase
within 10% of ``torch.optim.LBFGS`` per iteration, and scipy's final loss on the test functions.
Ratios > 1 mean FUSE is slower (or ends higher).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.optimize import minimize
from torch.nn import functional as F

from beyondgd.data import load_digits_split, test_functions
from beyondgd.optim import FUSE, AfterEpochs


def _mlp(seed: int, n_in: int = 64, hidden: int = 256, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 10),
    ).to(dtype)


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def time_per_step(make_opt, steps: int, repeats: int, x, y) -> float:
    """Median over repeats of the mean time per ``step(closure)`` call (after a warm-up)."""
    times = []
    for r in range(repeats):
        model = _mlp(r)
        opt = make_opt(model.parameters())
        closure = _closure(model, opt, x, y)
        for _ in range(3):
            opt.step(closure)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step(closure)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def lbfgs_cost(make_opt, iters: int, repeats: int, x, y) -> dict[str, float]:
    """One ``step`` of up to ``iters`` L-BFGS iterations: time per iteration and per closure
    evaluation, evaluations per iteration and final loss (medians over repeats)."""
    rows = []
    for r in range(repeats):
        model = _mlp(r, dtype=x.dtype)
        opt = make_opt(model.parameters(), iters)
        calls = [0]
        inner = _closure(model, opt, x, y)

        def closure(inner=inner, calls=calls):
            calls[0] += 1
            return inner()

        t0 = time.perf_counter()
        opt.step(closure)
        elapsed = time.perf_counter() - t0
        n_iter = opt.n_lbfgs_iters if isinstance(opt, FUSE) else opt.state[opt._params[0]]["n_iter"]
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y))
        rows.append((elapsed / max(n_iter, 1), elapsed / calls[0], calls[0] / max(n_iter, 1), loss))
    keys = ("s_per_iter", "s_per_eval", "evals_per_iter", "loss")
    return {k: statistics.median(row[i] for row in rows) for i, k in enumerate(keys)}


def test_function_losses(budget: int) -> list[tuple[str, float, float, float]]:
    """Final f - f* for FUSE (L-BFGS after 20 Adam steps), scipy L-BFGS-B and pytorch-minimize."""
    try:
        from torchmin import minimize as torchmin_minimize
    except ImportError:  # optional peer: `pip install "beyondgd[bench]"`
        torchmin_minimize = None
    rows = []
    for name, fn in test_functions().items():
        fuse_gaps, scipy_gaps, tm_gaps = [], [], []
        for seed in range(5):
            x0 = fn.random_start(seed)
            x = x0.clone().requires_grad_(True)
            opt = FUSE(
                [x],
                lr=1e-2,
                switch=AfterEpochs(20),
                reuse_last_eval=True,
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )

            def closure(x=x, opt=opt, fn=fn):
                opt.zero_grad()
                loss = fn(x)
                loss.backward()
                return loss

            while opt.n_evals < budget:
                spent = opt.n_evals
                opt.step(closure)
                if opt.n_evals == spent:  # converged
                    break
            fuse_gaps.append(float(fn(x.detach())) - fn.f_star)

            def fg(v, fn=fn):
                t = torch.tensor(v, dtype=torch.float64, requires_grad=True)
                f = fn(t)
                (g,) = torch.autograd.grad(f, t)
                return float(f.detach()), g.numpy()

            res = minimize(
                fg,
                x0.numpy(),
                jac=True,
                method="L-BFGS-B",
                options={"maxfun": budget, "maxiter": budget, "gtol": 1e-12, "ftol": 1e-15},
            )
            scipy_gaps.append(float(res.fun) - fn.f_star)
            if torchmin_minimize is not None:
                r = torchmin_minimize(fn, x0.clone(), method="l-bfgs", max_iter=budget)
                tm_gaps.append(float(r.fun) - fn.f_star)
        rows.append(
            (
                name,
                float(np.median(fuse_gaps)),
                float(np.median(scipy_gaps)),
                float(np.median(tm_gaps)) if tm_gaps else float("nan"),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.set_num_threads(1)  # small problems; avoids oversubscribing shared cores
    x, y, _, _ = load_digits_split()
    batch = slice(0, 128)

    adam_ref = time_per_step(
        lambda p: torch.optim.Adam(p, lr=1e-3), 100, repeats, x[batch], y[batch]
    )
    adam_fuse = time_per_step(
        lambda p: FUSE(p, lr=1e-3, switch=AfterEpochs(10**9)), 100, repeats, x[batch], y[batch]
    )
    print("\nPer-step cost (MLP 64-256-256-10 on digits; median of repeats)")
    print(f"{'phase':<24}{'beyondgd':>12}{'peer':>12}{'ratio':>8}  target")
    print(
        f"{'Adam step (batch 128)':<24}{adam_fuse * 1e3:>10.3f}ms{adam_ref * 1e3:>10.3f}ms"
        f"{adam_fuse / adam_ref:>8.3f}  <= 1.05 vs torch.optim.Adam"
    )
    tol = {"tolerance_grad": 1e-12, "tolerance_change": 1e-15, "history_size": 10}
    for dtype in (torch.float32, torch.float64):
        xd, yd = x.to(dtype), y
        ref = lbfgs_cost(
            lambda p, n: torch.optim.LBFGS(p, max_iter=n, line_search_fn="strong_wolfe", **tol),
            40,
            repeats,
            xd,
            yd,
        )
        ours = lbfgs_cost(
            lambda p, n: FUSE(p, switch=AfterEpochs(0), max_iter=n, **tol), 40, repeats, xd, yd
        )
        name = str(dtype).replace("torch.", "")
        print(f"L-BFGS, full batch, 40 iterations, {name} (peer: torch.optim.LBFGS)")
        for key, label, scale, unit in (
            ("s_per_eval", "  time per evaluation", 1e3, "ms"),
            ("s_per_iter", "  time per iteration", 1e3, "ms"),
            ("evals_per_iter", "  evaluations/iteration", 1, ""),
            ("loss", "  final loss", 1, ""),
        ):
            target = "  <= 1.10 (overhead)" if key == "s_per_eval" else ""
            print(
                f"{label:<24}{ours[key] * scale:>10.4g}{unit:<2}{ref[key] * scale:>10.4g}{unit:<2}"
                f"{ours[key] / ref[key]:>8.3f}{target}"
            )

    budget = 300 if args.quick else 1000
    print(
        f"\nFinal f - f* on the test functions (median of 5 starts, {budget} evaluations; "
        "FUSE: 20 Adam steps then L-BFGS, history 10; scipy: maxcor 10; torchmin: its default "
        "history 100)"
    )
    print(
        f"{'function':<26}{'FUSE':>11}{'scipy L-BFGS-B':>16}{'torchmin':>11}"
        f"{'FUSE/scipy':>12}{'FUSE/torchmin':>15}"
    )
    for name, fuse_gap, scipy_gap, tm_gap in test_function_losses(budget):
        print(
            f"{name:<26}{fuse_gap:>11.2e}{scipy_gap:>16.2e}{tm_gap:>11.2e}"
            f"{_gap_ratio(fuse_gap, scipy_gap):>12}{_gap_ratio(fuse_gap, tm_gap):>15}"
        )
    print("ratio < 1: FUSE ends closer to f*; gaps below 1e-12 count as 1e-12 (at the optimum)")


def _gap_ratio(ours: float, peer: float, floor: float = 1e-12) -> str:
    return f"{max(ours, floor) / max(peer, floor):.3g}"


if __name__ == "__main__":
    main()
